"""The paper's figures and the claims report (SPEC section 4).

One rule per figure (and per train-error variant, rule name `<id>_train`), with the
architecture as wildcard: FIGURES/<arch>/<id>.{pdf,png} (FIGURES = figures/<config name>),
rendered by `unmasking figure` from the aggregated datasets RESULTS/<arch>/<experiment>.nc.
A figure is made for an architecture when the experiments it needs ran for it.  The rule
`claims` evaluates the four claims on every architecture's results: FIGURES/claims.{json,md,html}
(the Markdown is printed at the end of the run).  The PNGs and the claims table are marked for
`snakemake --report report.html`, captioned from workflow/report/*.rst; the captions show the
claims' verdicts, read from FIGURES/claims.json when the report is built.
"""


localrules:
    claims,


for _fig_id in FIGURE_SPECS:
    for _split in figure_splits(_fig_id):
        _name = f"{_fig_id}_train" if _split == "train" else _fig_id

        rule:
            name:
                _name
            input:
                figure_inputs(_fig_id),
            output:
                pdf=f"{figure_stem(_fig_id, _split)}.pdf",
                png=report(
                    f"{figure_stem(_fig_id, _split)}.png",
                    caption=f"../report/{_fig_id}.rst",
                    category=FIGURE_SPECS[_fig_id][0],
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
                figure=_fig_id,
                split=_split,
                stem=lambda wildcards, output: output.pdf[: -len(".pdf")],
                eps_barrier=config["thresholds"]["barrier"],
                match_floor=config["thresholds"]["match_floor"],
                claim=FIGURE_SPECS[_fig_id][3],
                rewind_steps=lambda wildcards: ", ".join(
                    map(str, PLAN[wildcards.arch].rewind_steps)
                ),
                seeds=lambda wildcards: ", ".join(map(str, PLAN[wildcards.arch].seeds)),
                levels=lambda wildcards: PLAN[wildcards.arch].levels,
            shell:
                "{params.exe} figure {params.figure} --inputs {input} --out {params.stem} "
                "--split {params.split} --arch {wildcards.arch} --eps-barrier {params.eps_barrier} "
                "--match-floor {params.match_floor} > {log} 2>&1"

        workflow.localrules(
            _name
        )  # a few seconds of plotting: never worth a cluster job
        FIGURE_TARGETS.extend(
            f"{figure_stem(_fig_id, _split).format(arch=arch.name)}{ext}"
            for arch in PLAN.values()
            if figure_made(arch, _fig_id, _split)
            for ext in (".pdf", ".png")
        )


rule claims:
    input:
        lambda wildcards: result_targets(),
    output:
        json=CLAIMS_JSON,
        md=f"{FIGURES}/claims.md",
        html=report(
            f"{FIGURES}/claims.html",
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


FIGURE_TARGETS.extend([CLAIMS_JSON, f"{FIGURES}/claims.md", f"{FIGURES}/claims.html"])


onsuccess:
    if Path(f"{FIGURES}/claims.md").exists():
        print(f"\n{Path(f'{FIGURES}/claims.md').read_text()}")
