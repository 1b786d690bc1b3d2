"""The one list of experiments and figures: read by the CLI, the figures, the claims and the Snakefile.

Every experiment has one name (``pruning_ratio``): it is the workflow's config section and rule,
the ``unmasking`` subcommand, the result file (``<name>.nc``) and the key of the figures' and
claims' inputs.  ``id`` is the protocol's number (``E6``); the ``experiment`` attribute of a
result file is ``<id>_<name>`` (:attr:`Experiment.label`).  Every figure has one id
(``fig6_pruning_ratio``): its module in :mod:`unmasking.figures`, its rule and its file name.

This module is pure data: it imports nothing, so any layer can read it.  Where code lives is
given as dotted module paths, imported by whoever needs the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    name: str  # config section, rule, command, result file, figure/claims input key
    id: str  # the protocol's number, E1 ... E9
    title: str  # one line, for help texts and reports
    module: str | None = None  # library module of the analysis (None: E1, run by the IMP runner)
    priority: int = 0  # scheduling priority of its jobs (higher first)
    retrains: bool = False  # retrains networks: its jobs take --models-at-once and --compile
    needs_next_level: bool = False  # level L needs level L+1 trained (runs to the last level but one)
    section: str | None = None  # config section it takes its levels/seeds/architectures from (None: its own)
    has_errors: bool = True  # its results hold test/train errors (a train-error figure can show them)

    @property
    def label(self) -> str:
        """The ``experiment`` attribute of its result files, e.g. ``E6_pruning_ratio``."""
        return f"{self.id}_{self.name}"


@dataclass(frozen=True)
class Figure:
    id: str  # module unmasking.figures.<id>, rule, file name
    title: str  # report category
    needs: tuple[str, ...]  # experiments whose results it cannot do without
    uses: tuple[str, ...] = ()  # experiments it shows when their results exist
    claim: int = 0  # the claim it informs
    train_variant: bool = False  # also drawn from train error (<id>_train)
    needs_any_use: bool = False  # drawn only when at least one of `uses` exists

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*self.needs, *self.uses)


# Scheduling: IMP first (every analysis waits for it), then the long analyses, so that no long
# job starts last and runs alone on an otherwise idle machine.
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("imp", "E1", "iterative magnitude pruning with rewinding", priority=100),
        Experiment(
            "interpolation",
            "E2",
            "linear interpolation between successive IMP solutions",
            "unmasking.analyses.interpolation",
        ),
        Experiment(
            "perturbation",
            "E3",
            "robustness of SGD to perturbations of the rewind point",
            "unmasking.analyses.perturbation",
            priority=60,
            retrains=True,
        ),
        Experiment("hessian", "E4", "Hessian eigenspectrum at each level", "unmasking.analyses.hessian", priority=50),
        Experiment(
            "pruning_theory",
            "E5",
            "maximal pruning ratio predicted from the Hessian spectrum",
            "unmasking.analyses.pruning_theory",
            section="hessian",
            has_errors=False,
        ),
        Experiment(
            "pruning_ratio",
            "E6",
            "maximal pruning ratio measured by one-shot pruning and retraining",
            "unmasking.analyses.pruning_ratio",
            priority=50,
            retrains=True,
        ),
        Experiment("flatness", "E7", "flatness of the directions that pruning removes", "unmasking.analyses.flatness"),
        Experiment("small_weights", "E8", "where the new small weights come from", "unmasking.analyses.small_weights"),
        Experiment(
            "landscape",
            "E9",
            "error landscape on the plane of three IMP solutions",
            "unmasking.analyses.landscape",
            priority=20,
            needs_next_level=True,
        ),
    )
}

# Experiments after IMP: the analyses E2-E9, one rule and one subcommand each.
ANALYSES: tuple[str, ...] = tuple(name for name, e in EXPERIMENTS.items() if e.module is not None)

FIGURES: dict[str, Figure] = {
    f.id: f
    for f in (
        Figure("fig1_landscape", "Fig. 1: error landscape", ("landscape",), ("imp",), claim=4),
        Figure(
            "fig2_imp_connectivity",
            "Fig. 2: IMP error and successive barriers",
            ("imp", "interpolation"),
            claim=1,
            train_variant=True,
        ),
        Figure(
            "fig3_interpolation",
            "Fig. 3: linear interpolation",
            ("interpolation",),
            ("imp",),
            claim=1,
            train_variant=True,
        ),
        Figure(
            "fig4_robustness",
            "Fig. 4: robustness to perturbation",
            ("perturbation",),
            ("imp",),
            claim=2,
            train_variant=True,
        ),
        Figure("fig5_hessian", "Fig. 5: Hessian spectrum", ("hessian", "imp"), claim=3),
        Figure(
            "fig6_pruning_ratio",
            "Fig. 6: maximal pruning ratio",
            ("imp",),
            ("pruning_theory", "pruning_ratio"),
            claim=3,
            train_variant=True,
            needs_any_use=True,
        ),
        Figure("fig7_flat_directions", "Fig. 7: flatness of pruning directions", ("flatness", "imp"), claim=4),
        Figure("fig8_small_weights", "Fig. 8: new small weights", ("small_weights",), ("imp",), claim=4),
    )
}

CLAIMS: tuple[int, ...] = (1, 2, 3, 4)


def experiment(name: str) -> Experiment:
    """The experiment called ``name``; a KeyError names the valid ones."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; the experiments are {', '.join(EXPERIMENTS)}") from None


def experiment_from_label(label: str) -> Experiment | None:
    """The experiment of an ``experiment`` attribute (``E6_pruning_ratio``), or None."""
    return next((e for e in EXPERIMENTS.values() if e.label == label), None)


# The architectures by name (unmasking.models builds them and checks at import that it builds exactly
# these): the workflow's plan checks a config's model names without importing torch.
MODELS = ("mlp", "cnn1d", "resnet1d", "resnet20", "resnet18", "vgg16", "resnet50")
