"""Aggregation: the per-job datasets of an experiment, for every rewind step, seed (and level),
combined into one dataset per architecture, RESULTS/<arch>/<experiment>.nc, with the
coordinates `arch` and `rewind_step` added so that datasets of different runs combine.
"""


localrules:
    aggregate,


rule aggregate:
    input:
        aggregate_inputs,
    output:
        f"{RESULTS}/{{arch}}/{{exp}}.nc",
    log:
        f"{LOGS}/{{arch}}/aggregate_{{exp}}.log",
    benchmark:
        f"{BENCHMARKS}/{{arch}}/aggregate_{{exp}}.tsv"
    wildcard_constraints:
        exp="|".join(["imp", *registry.ANALYSES]),
    conda:
        CONDA_ENV
    threads: resource("aggregate", "threads")
    resources:
        mem_mb=resource("aggregate", "mem_mb"),
        runtime=resource("aggregate", "runtime"),
        gpu=resource("aggregate", "gpu"),
    params:
        rewind_steps=aggregate_rewind_steps,
        recipe_hashes=aggregate_recipe_hashes,
        label=lambda wildcards: registry.EXPERIMENTS[wildcards.exp].label,
        config_name=config["name"],
    script:
        "../scripts/aggregate.py"
