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

import json

FIGURES = f"figures/{config['name']}"
CLAIMS_JSON = f"{FIGURES}/claims.json"

# figure id -> (title, experiments it needs, experiments it uses when present, claim it informs)
FIGURE_SPECS = {
    "fig1_landscape": ("Fig. 1: error landscape", ["landscape"], ["imp"], 4),
    "fig2_imp_connectivity": ("Fig. 2: IMP error and successive barriers", ["imp", "interpolation"], [], 1),
    "fig3_interpolation": ("Fig. 3: linear interpolation", ["interpolation"], ["imp"], 1),
    "fig4_robustness": ("Fig. 4: robustness to perturbation", ["perturbation"], ["imp"], 2),
    "fig5_hessian": ("Fig. 5: Hessian spectrum", ["hessian", "imp"], [], 3),
    "fig6_pruning_ratio": ("Fig. 6: maximal pruning ratio", ["imp"], ["pruning_theory", "pruning_ratio"], 3),
    "fig7_flat_directions": ("Fig. 7: flatness of pruning directions", ["flatness", "imp"], [], 4),
    "fig8_small_weights": ("Fig. 8: new small weights", ["small_weights"], ["imp"], 4),
}
# Figures with a train-error variant (<id>_train); fig1 has one when E9 evaluates the train split.
TRAIN_VARIANTS = ("fig2_imp_connectivity", "fig3_interpolation", "fig4_robustness", "fig6_pruning_ratio")


def experiment_available(arch, exp):
    """Whether the aggregate RESULTS/<arch>/<exp>.nc is among the workflow's results."""
    if exp == "imp":
        return True
    return bool(enabled(exp) and experiment_levels(arch, exp) and runs(arch, exp))


def figure_splits(fig_id):
    if fig_id in TRAIN_VARIANTS:
        return ["test", "train"]
    if fig_id == "fig1_landscape" and "train" in (section("landscape").get("splits") or []):
        return ["test", "train"]
    return ["test"]


def figure_made(arch, fig_id, split="test"):
    """Whether the workflow makes a figure (variant) for an architecture: when its experiments ran."""
    _, needs, uses, _ = FIGURE_SPECS[fig_id]
    if not all(experiment_available(arch, exp) for exp in needs):
        return False
    if fig_id == "fig6_pruning_ratio":  # theory or experiment; the train variant shows E6's errors
        if split == "train":
            return experiment_available(arch, "pruning_ratio")
        return any(experiment_available(arch, exp) for exp in uses)
    return True


def figure_inputs(fig_id):
    _, needs, uses, _ = FIGURE_SPECS[fig_id]

    def inputs(wildcards):
        arch = PLAN[wildcards.arch]
        return [
            aggregate_path(arch.name, exp)
            for exp in [*needs, *uses]
            if experiment_available(arch, exp)
        ]

    return inputs


def figure_stem(fig_id, split):
    return f"{FIGURES}/{{arch}}/{fig_id}{'_train' if split == 'train' else ''}"


def load_claims():
    """The claims report of this configuration, when it has been written (else None)."""
    try:
        return json.loads(Path(CLAIMS_JSON).read_text())
    except (OSError, ValueError):
        return None


def claim_rows(report, arch, claim):
    return [
        c
        for c in (report or {}).get("claims", [])
        if c["arch"] == arch and int(c["claim"]) == int(claim)
    ]


def verdict_text(report, arch, claim, reasons=True):
    """`rewind step t: <verdict> (<reason>)` of a claim for an architecture, per rewind step."""
    if report is None:
        return "not evaluated yet (the claims rule has not run)"
    rows = claim_rows(report, arch, claim)
    if not rows:
        return "not evaluated for this architecture"
    return "; ".join(
        f"rewind step {c['rewind_step']}: {c['verdict']}"
        + (f" ({c['reason']})" if reasons else "")
        for c in rows
    )


def figure_labels(fig_id, split):
    """Report labels, computed when the report is built (so the verdict is the current one)."""
    claim = FIGURE_SPECS[fig_id][3]

    def labels(wildcards):
        return {
            "architecture": wildcards.arch,
            "error": split,
            "claim": str(claim),
            "verdict": verdict_text(load_claims(), wildcards.arch, claim, reasons=False),
        }

    return labels


# The captions (rendered by `snakemake --report`) read the verdicts from the config object, the
# only workflow state a caption sees; the key is added after the config was validated.
_REPORT = load_claims()
config["_report_verdicts"] = {
    arch: {str(n): verdict_text(_REPORT, arch, n) for n in (1, 2, 3, 4)} for arch in PLAN
}


localrules:
    claims,


for _fig_id in FIGURE_SPECS:
    for _split in figure_splits(_fig_id):
        _name = _fig_id + ("_train" if _split == "train" else "")

        rule:
            name:
                _name
            input:
                figure_inputs(_fig_id),
            output:
                pdf=figure_stem(_fig_id, _split) + ".pdf",
                png=report(
                    figure_stem(_fig_id, _split) + ".png",
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

        workflow.localrules(_name)  # a few seconds of plotting: never worth a cluster job
        FIGURE_TARGETS.extend(
            figure_stem(_fig_id, _split).format(arch=arch.name) + ext
            for arch in PLAN.values()
            if figure_made(arch, _fig_id, _split)
            for ext in (".pdf", ".png")
        )


def claims_options():
    """Claim thresholds from the config's `thresholds` (the two the schema defines, and any others set)."""
    th = config["thresholds"]
    options = {"eps_barrier": th["barrier"], "match_floor": th["match_floor"]}
    for key in ("min_levels", "min_agreement", "majority", "strength", "p_star_tolerance"):
        if key in th:
            options[key] = th[key]
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


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
        print("\n" + Path(f"{FIGURES}/claims.md").read_text())
