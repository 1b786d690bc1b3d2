"""The paper's figures and the claims report (SPEC section 4).

One rule per figure (and per train-error variant, rule name `<id>_train`), with the
architecture as wildcard: FIGURE_DIR/<arch>/<id>.{pdf,png} (FIGURE_DIR = figures/<config name>),
rendered by `unmasking figure` from the aggregated datasets RESULTS/<arch>/<experiment>.nc.
The figures, their inputs, claims and train variants are those of unmasking.foundations.registry;
a figure is made for an architecture when the experiments it needs ran for it (PLAN.figure_made,
the targets of `rule all`).  The rule `claims` evaluates the four claims on every architecture's
results: FIGURE_DIR/claims.{json,md,html} (the Markdown is printed at the end of the run).  The PNGs and the claims table are marked for
`snakemake --report report.html`, captioned from workflow/report/*.rst; the captions show the
claims' verdicts, read from FIGURE_DIR/claims.json when the report is built.
"""


localrules:
    claims,


for _fig_id, _figure in registry.FIGURES.items():
    for _split in PLAN.figure_splits(_fig_id):
        _name = f"{_fig_id}_train" if _split == "train" else _fig_id

        rule:
            name:
                _name
            input:
                figure_inputs(_fig_id),
            output:
                pdf=f"{PATHS.figure_stem(_fig_id, _split)}.pdf",
                png=report(
                    f"{PATHS.figure_stem(_fig_id, _split)}.png",
                    caption=f"../report/{_fig_id}.rst",
                    category=_figure.title,
                    subcategory="{arch}",
                    labels=figure_labels(_fig_id, _split),
                ),
            log:
                f"{LOGS}/{{arch}}/{_name}.log",
            conda:
                CONDA_ENV
            threads: resource("figures", "threads")
            resources:
                mem_mb=resource("figures", "mem_mb"),
                runtime=resource("figures", "runtime"),
                gpu=resource("figures", "gpu"),
            params:
                exe=UNMASKING,
                config_name=config["name"],
                figure=_fig_id,
                split=_split,
                stem=lambda wildcards, output: output.pdf[: -len(".pdf")],
                eps_barrier=config["thresholds"]["barrier"],
                match_floor=config["thresholds"]["match_floor"],
                claim=_figure.claim,
                rewind_steps=lambda wildcards: ", ".join(
                    map(str, PLAN.archs[wildcards.arch].rewind_steps)
                ),
                seeds=lambda wildcards: ", ".join(
                    map(str, PLAN.archs[wildcards.arch].seeds)
                ),
                levels=lambda wildcards: PLAN.archs[wildcards.arch].levels,
            shell:
                "{params.exe} figure {params.figure} --inputs {input} --out {params.stem} "
                "--split {params.split} --arch {wildcards.arch} --config-name {params.config_name} "
                "--eps-barrier {params.eps_barrier} --match-floor {params.match_floor} > {log} 2>&1"

        workflow.localrules(
            _name
        )  # a few seconds of plotting: never worth a cluster job


rule claims:
    input:
        lambda wildcards: PLAN.result_targets(),
    output:
        json=CLAIMS["json"],
        md=CLAIMS["md"],
        html=report(
            CLAIMS["html"],
            caption="../report/claims.rst",
            category="Claims",
            labels={"table": "claims"},
        ),
    log:
        f"{LOGS}/claims.log",
    conda:
        CONDA_ENV
    threads: resource("figures", "threads")
    resources:
        mem_mb=resource("figures", "mem_mb"),
        runtime=resource("figures", "runtime"),
        gpu=resource("figures", "gpu"),
    params:
        exe=UNMASKING,
        name=config["name"],
        options=claims_options(),
    shell:
        "{params.exe} claims --inputs {input} --out-json {output.json} --out-md {output.md} "
        "--out-html {output.html} --config-name {params.name} {params.options} > {log} 2>&1; "
        "cat {output.md}"


onsuccess:
    if Path(CLAIMS["md"]).exists():
        print(f"\n{Path(CLAIMS['md']).read_text()}")
