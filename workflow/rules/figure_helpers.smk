"""Helpers of the figure rules (figures.smk): targets, inputs, report labels and verdicts."""

import json

FIGURES = f"figures/{config['name']}"
CLAIMS_JSON = f"{FIGURES}/claims.json"

# figure id -> (title, experiments it needs, experiments it uses when present, claim it informs)
FIGURE_SPECS = {
    "fig1_landscape": ("Fig. 1: error landscape", ["landscape"], ["imp"], 4),
    "fig2_imp_connectivity": (
        "Fig. 2: IMP error and successive barriers",
        ["imp", "interpolation"],
        [],
        1,
    ),
    "fig3_interpolation": (
        "Fig. 3: linear interpolation",
        ["interpolation"],
        ["imp"],
        1,
    ),
    "fig4_robustness": (
        "Fig. 4: robustness to perturbation",
        ["perturbation"],
        ["imp"],
        2,
    ),
    "fig5_hessian": ("Fig. 5: Hessian spectrum", ["hessian", "imp"], [], 3),
    "fig6_pruning_ratio": (
        "Fig. 6: maximal pruning ratio",
        ["imp"],
        ["pruning_theory", "pruning_ratio"],
        3,
    ),
    "fig7_flat_directions": (
        "Fig. 7: flatness of pruning directions",
        ["flatness", "imp"],
        [],
        4,
    ),
    "fig8_small_weights": ("Fig. 8: new small weights", ["small_weights"], ["imp"], 4),
}
# Figures with a train-error variant (<id>_train); fig1 has one when E9 evaluates the train split.
TRAIN_VARIANTS = (
    "fig2_imp_connectivity",
    "fig3_interpolation",
    "fig4_robustness",
    "fig6_pruning_ratio",
)


def experiment_available(arch, exp):
    """Whether the aggregate RESULTS/<arch>/<exp>.nc is among the workflow's results."""
    if exp == "imp":
        return True
    return bool(enabled(exp) and experiment_levels(arch, exp) and runs(arch, exp))


def figure_splits(fig_id):
    if fig_id in TRAIN_VARIANTS:
        return ["test", "train"]
    if fig_id == "fig1_landscape" and "train" in (
        section("landscape").get("splits") or []
    ):
        return ["test", "train"]
    return ["test"]


def figure_made(arch, fig_id, split="test"):
    """Whether the workflow makes a figure (variant) for an architecture: when its experiments ran."""
    _, needs, uses, _ = FIGURE_SPECS[fig_id]
    if not all(experiment_available(arch, exp) for exp in needs):
        return False
    if (
        fig_id == "fig6_pruning_ratio"
    ):  # theory or experiment; the train variant shows E6's errors
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
        f"{' (%s)' % c['reason'] if reasons else ''}"
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
            "verdict": verdict_text(
                load_claims(), wildcards.arch, claim, reasons=False
            ),
        }

    return labels


# The captions (rendered by `snakemake --report`) read the verdicts from the config object, the
# only workflow state a caption sees; the key is added after the config was validated.
_REPORT = load_claims()
config["_report_verdicts"] = {
    arch: {str(n): verdict_text(_REPORT, arch, n) for n in (1, 2, 3, 4)}
    for arch in PLAN
}


def claims_options():
    """Claim thresholds from the config's `thresholds` (the two the schema defines, and any others set)."""
    th = config["thresholds"]
    options = {"eps_barrier": th["barrier"], "match_floor": th["match_floor"]}
    for key in (
        "min_levels",
        "min_agreement",
        "majority",
        "strength",
        "p_star_tolerance",
    ):
        if key in th:
            options[key] = th[key]
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
