"""The analyses E2-E9 (SPEC section 3), one rule per experiment, each calling its `unmasking`
subcommand with `--run`, `--levels` and the options of its config section.

Granularity `run`: one job per run over all the experiment's levels (RUN/<experiment>.nc).
Granularity `level`: one job per level (RUN/<experiment>/level_LL.nc), which waits only for the
IMP files it reads (levels L and L+1, masks through L+2), not for the whole run.
"""


def analysis_inputs(exp):
    """Inputs of an analysis job: the IMP files of its level and the next when IMP runs per level
    and the job is per level, else the run's imp.nc (the whole run); E5 (and E7 with
    use_hessian) also read E4's output for the same run (and level)."""

    def inputs(wildcards):
        base = RUN.format(
            arch=wildcards.arch, rewind=wildcards.rewind, seed=wildcards.seed
        )
        per_level = "level" in wildcards.keys()
        if per_level and config["granularity"] == "level":
            level = int(wildcards.level)
            files = {
                "rewind": f"{base}/run/rewind.pt",
                "imp": imp_level_files(wildcards, level, level + 1, level + 2),
            }
        else:
            files = {"imp": f"{base}/imp.nc"}
        if reads_hessian(exp):
            if exp_granularity("hessian") == "level":
                files["hessian"] = f"{base}/hessian/level_{int(wildcards.level):02d}.nc"
            else:
                files["hessian"] = f"{base}/hessian.nc"
        return files

    return inputs


def hessian_arg(exp):
    """`--hessian FILE` for the experiments that read E4's output, else nothing."""

    def arg(wildcards, input):
        return f"--hessian {input.hessian}" if reads_hessian(exp) else ""

    return arg


def analysis_file(exp, root, suffix):
    if exp_granularity(exp) == "level":
        return f"{root}/{exp}/level_{{level}}.{suffix}"
    return f"{root}/{exp}.{suffix}"


for _exp, _command in EXPERIMENTS.items():

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
        priority: PRIORITY.get(_exp, 0)
        conda:
            CONDA_ENV
        threads: resource(_exp, "threads")
        resources:
            mem_mb=resource(_exp, "mem_mb"),
            runtime=resource(_exp, "runtime"),
            gpu=resource(_exp, "gpu"),
        params:
            exe=UNMASKING,
            command=_command,
            run=run_dir,
            levels=levels_arg(_exp),
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
                "{params.hessian} --out {output} {params.options} {params.retraining} "
                "{params.common} > {log} 2>&1"
            )
