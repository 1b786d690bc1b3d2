"""The analyses E2-E9 (SPEC section 3), one rule per experiment of unmasking.foundations.registry,
each calling the `unmasking` subcommand of the same name with `--run`, `--levels` and the
options of its config section (input functions and command lines: common.smk).

Granularity `run`: one job per run over all the experiment's levels (RUN/<experiment>.nc).
Granularity `level`: one job per level (RUN/<experiment>/level_LL.nc), which waits only for the
IMP files it reads (levels L and L+1, masks through L+2), not for the whole run.
"""

for _exp in registry.ANALYSES:

    rule:
        name:
            _exp
        input:
            unpack(analysis_inputs(_exp)),
        output:
            analysis_file(_exp, RUN, "nc"),
        log:
            analysis_file(_exp, RUN_LOG, "log"),
        benchmark:
            analysis_file(_exp, RUN_BENCHMARK, "tsv")
        priority: registry.EXPERIMENTS[_exp].priority
        conda:
            CONDA_ENV
        threads: resource(_exp, "threads")
        resources:
            mem_mb=resource(_exp, "mem_mb"),
            runtime=resource(_exp, "runtime"),
            gpu=resource(_exp, "gpu"),
        params:
            exe=UNMASKING,
            command=_exp,
            run=run_dir,
            levels=levels_arg(_exp),
            expect=expect_args,
            options=experiment_options(_exp),
            data_env=data_env,
            common=common_flags(),
            hessian=hessian_arg(_exp),
            retraining=retraining_args(_exp),
        # The shell command is evaluated again when a job runs, after the loop has ended: it
        # must not depend on the loop variable (everything per experiment is in params).
        shell:
            with_exports(
                "{params.exe} {params.command} --run {params.run} --levels {params.levels} "
                "{params.expect} {params.hessian} --out {output} {params.options} {params.retraining} "
                "{params.common} >> {log} 2>&1"
            )
