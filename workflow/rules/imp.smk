"""E1, IMP with rewinding: one `unmasking imp` job per run (granularity `run`), or chained
pretrain -> train level L -> prune -> train level L+1 ... jobs (granularity `level`).

Every run's IMP folder is RUN/run (the layout of `unmasking.imp`); its per-level metrics are
summarized in RUN/imp.nc.  The first job of a run removes a folder made with another recipe
(`fresh_run.py`): Snakemake reruns it when the recipe hash or `compile` (params) change.
"""

if config["granularity"] == "run":

    rule imp:
        output:
            run_file("imp.nc"),
        log:
            run_log("imp.log"),
        benchmark:
            run_benchmark("imp.tsv")
        priority: registry.EXPERIMENTS["imp"].priority
        conda:
            CONDA_ENV
        threads: resource("imp", "threads")
        resources:
            mem_mb=resource("imp", "mem_mb"),
            runtime=resource("imp", "runtime"),
            gpu=resource("imp", "gpu"),
        params:
            exe=UNMASKING,
            run=run_dir,
            recipe=recipe_args,
            hash=recipe_hash,
            levels=lambda wildcards: PLAN.archs[wildcards.arch].levels,
            data_env=data_env,
            common=common_flags(),
            compile=compile_arg,
        shell:
            with_exports(
                FRESH_RUN
                + "{params.exe} imp --run {params.run} {params.recipe} --levels {params.levels} "
                "--out {output} {params.compile} {params.common} >> {log} 2>&1"
            )

else:

    rule pretrain:
        output:
            run_file("run/rewind.pt"),
        log:
            run_log("pretrain.log"),
        benchmark:
            run_benchmark("pretrain.tsv")
        priority: registry.EXPERIMENTS["imp"].priority
        conda:
            CONDA_ENV
        threads: resource("pretrain", "threads")
        resources:
            mem_mb=resource("pretrain", "mem_mb"),
            runtime=resource("pretrain", "runtime"),
            gpu=resource("pretrain", "gpu"),
        params:
            exe=UNMASKING,
            run=run_dir,
            recipe=recipe_args,
            hash=recipe_hash,
            data_env=data_env,
            common=common_flags(),
            compile=compile_arg,
        shell:
            with_exports(
                FRESH_RUN
                + "{params.exe} pretrain --run {params.run} {params.recipe} {params.compile} "
                "{params.common} >> {log} 2>&1"
            )

    rule train_level:
        input:
            unpack(train_level_inputs),
        output:
            final=run_file("run/level_{level}/final.pt"),
            metrics=run_file("run/level_{level}/metrics.json"),
        log:
            run_log("train_level_{level}.log"),
        benchmark:
            run_benchmark("train_level_{level}.tsv")
        priority: registry.EXPERIMENTS["imp"].priority
        conda:
            CONDA_ENV
        threads: resource("train_level", "threads")
        resources:
            mem_mb=resource("train_level", "mem_mb"),
            runtime=resource("train_level", "runtime"),
            gpu=resource("train_level", "gpu"),
        params:
            exe=UNMASKING,
            run=run_dir,
            level=lambda wildcards: int(wildcards.level),
            expect=expect_args,
            data_env=data_env,
            common=common_flags(),
            compile=compile_arg,
        shell:
            with_exports(
                "{params.exe} train-level --run {params.run} --level {params.level} {params.expect} "
                "{params.compile} {params.common} >> {log} 2>&1"
            )

    rule prune:
        input:
            final=lambda wildcards: level_file(
                wildcards, int(wildcards.level) - 1, "final.pt"
            ),
        output:
            mask=run_file("run/level_{level}/mask.pt"),
            stats=run_file("run/level_{level}/prune.json"),
        log:
            run_log("prune_{level}.log"),
        benchmark:
            run_benchmark("prune_{level}.tsv")
        priority: registry.EXPERIMENTS["imp"].priority
        conda:
            CONDA_ENV
        threads: resource("prune", "threads")
        resources:
            mem_mb=resource("prune", "mem_mb"),
            runtime=resource("prune", "runtime"),
            gpu=resource("prune", "gpu"),
        params:
            exe=UNMASKING,
            run=run_dir,
            level=lambda wildcards: int(wildcards.level) - 1,
            expect=expect_args,
            data_env=data_env,
            common=common_flags(),
        shell:
            with_exports(
                "{params.exe} prune --run {params.run} --level {params.level} {params.expect} "
                "{params.common} >> {log} 2>&1"
            )

    rule summarize:
        input:
            lambda wildcards: imp_level_files(
                wildcards, 0, PLAN.archs[wildcards.arch].levels
            ),
        output:
            run_file("imp.nc"),
        log:
            run_log("summarize.log"),
        benchmark:
            run_benchmark("summarize.tsv")
        conda:
            CONDA_ENV
        threads: resource("summarize", "threads")
        resources:
            mem_mb=resource("summarize", "mem_mb"),
            runtime=resource("summarize", "runtime"),
            gpu=resource("summarize", "gpu"),
        params:
            exe=UNMASKING,
            run=run_dir,
            levels=lambda wildcards: PLAN.archs[wildcards.arch].levels,
            expect=expect_args,
            data_env=data_env,
            common=common_flags(),
        shell:
            with_exports(
                "{params.exe} summarize --run {params.run} --levels {params.levels} {params.expect} "
                "--out {output} {params.common} >> {log} 2>&1"
            )
