"""The plan of a workflow configuration: architectures, runs, levels, result files and figures.

:class:`Plan` is built from a config that the schema has validated (defaults filled in).  It
resolves every architecture's recipe as the jobs will (so a bad recipe name or ``set:`` key
stops the workflow before any job), checks what one key can only say with another (levels,
seeds and architectures of the experiments, E5 and E7 against E4), and answers the rule files'
questions: which runs and levels an experiment has, which files its jobs write and which
aggregates, figures and claims files ``rule all`` builds.  Experiments and figures, with their
priorities and inputs, come from :mod:`unmasking.foundations.registry`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..foundations.datasets import DATASETS, FABRICATED, DataMissingError, check_available, data_folder, is_fabricated
from ..foundations.hparams import ConfigError, DataHparams
from ..foundations.recipes import build_recipe
from ..foundations.registry import ANALYSES, EXPERIMENTS, FIGURES, MODELS
from .paths import Paths

# Resources of a rule that no config sets (workflow/rules/common.smk reads them from here).
FALLBACK_RESOURCES = {"threads": 1, "mem_mb": 2000, "runtime": 60, "gpu": 0}


class PlanError(ConfigError):
    """A workflow config that passes the schema but cannot be run; the message names the key and the fix."""


@dataclass
class Arch:
    """One architecture entry of the config, resolved against its recipe."""

    name: str
    recipe: str
    overrides: dict
    data_root: str | None
    levels: int
    rewind_steps: list
    seeds: list
    resources: dict
    models_at_once: int  # E3/E6 retrainings trained together
    compile: bool
    hashes: dict = field(default_factory=dict)  # rewind step -> recipe hash (as the run's run.json records it)
    data: DataHparams | None = None  # the recipe's data set, its root resolved as the jobs resolve it

    def set_args(self, rewind) -> list[str]:
        """`--set` items: the config's overrides and the rewind step. The last level is not part
        of the recipe (jobs get `--levels`), so raising `levels` continues the runs."""
        items = {**self.overrides, "prune.rewind_step": int(rewind)}
        return [f"{k}={json.dumps(v)}" for k, v in items.items()]


def recipe_problems(entry: dict) -> list[str]:
    """Every problem of an architecture entry's recipe and overrides, each one line (all of them, not the
    first): keys set elsewhere, an unknown recipe, each unknown or ill-typed `set` key, an unknown model or
    data set."""
    name, problems = entry["name"], []
    for key, field_name in (("prune.levels", "levels"), ("prune.rewind_step", "rewind_steps")):
        if key in entry["set"]:
            problems.append(
                f"architectures[{name}].set: {key} is set by architectures[{name}].{field_name}; move it there"
            )
    try:
        build_recipe(entry["recipe"])
    except ConfigError as e:
        return problems + [f"architectures[{name}].recipe: {e}"]
    # checked with the entry's first rewind step: `set` may shorten training below the recipe's own
    rewind = [f"prune.rewind_step={min(entry['rewind_steps'])}"] if entry.get("rewind_steps") else []
    for key, value in entry["set"].items():
        try:
            build_recipe(entry["recipe"], None, [f"{key}={json.dumps(value)}", *rewind])
        except ConfigError as e:
            problems.append(f"architectures[{name}].set: {e}")
    if problems:
        return problems
    recipe = build_recipe(entry["recipe"], None, [f"{k}={json.dumps(v)}" for k, v in entry["set"].items()] + rewind)
    if recipe.model.name not in MODELS:
        problems.append(
            f"architectures[{name}].set: unknown model {recipe.model.name!r}; choose one of: {', '.join(MODELS)}"
        )
    if recipe.data.name not in DATASETS:
        problems.append(
            f"architectures[{name}].set: unknown data set {recipe.data.name!r}; choose one of: {', '.join(DATASETS)}"
        )
    return problems


def arch_from_config(entry: dict, seeds: list) -> Arch:
    """An architecture entry with its recipe built (and its hash per rewind step)."""
    name = entry["name"]
    problems = recipe_problems(entry)
    if problems:
        raise PlanError("\n".join(problems))
    rewind = [f"prune.rewind_step={min(entry['rewind_steps'])}"] if entry.get("rewind_steps") else []
    base = build_recipe(entry["recipe"], None, [f"{k}={json.dumps(v)}" for k, v in entry["set"].items()] + rewind)
    arch = Arch(
        name=name,
        recipe=entry["recipe"],
        overrides=dict(entry["set"]),
        data_root=entry["data_root"],
        levels=base.prune.levels if entry["levels"] is None else entry["levels"],
        rewind_steps=entry["rewind_steps"] or [base.prune.rewind_step],
        seeds=entry["seeds"] or seeds,
        resources=entry.get("resources", {}),
        models_at_once=entry["models_at_once"],
        compile=entry["compile"],
        # as in the jobs: the recipe's data.root, else UNMASKING_DATA (data_root when configured)
        data=dataclasses.replace(base.data, root=base.data.root or entry["data_root"]),
    )
    for t in arch.rewind_steps:
        try:
            arch.hashes[t] = build_recipe(arch.recipe, None, arch.set_args(t)).hash()
        except ConfigError as e:
            raise PlanError(f"architectures[{name}].rewind_steps: {e}") from None
    return arch


def data_missing(arch: Arch) -> str | None:
    """The data check's message when the architecture's data set is not on disk, else None."""
    try:
        check_available(arch.data)
    except DataMissingError as e:
        return (
            f"architectures[{arch.name}].data_root: {e} In this workflow, set "
            f"architectures[{arch.name}].data_root (or $UNMASKING_DATA) to that folder."
        )
    return None


class Plan:
    """What a validated workflow config runs; raises :class:`PlanError` for a config that cannot run."""

    def __init__(self, config: dict):
        self.config = config
        self.paths = Paths(config["name"])
        self.archs: dict[str, Arch] = {}
        problems = []
        for entry in config["architectures"]:
            if entry["name"] in self.archs:
                raise PlanError(f"architectures: the name {entry['name']!r} appears twice; names must be unique")
            try:
                self.archs[entry["name"]] = arch_from_config(entry, config["seeds"])
            except PlanError as e:  # collect every architecture's problems, then report them all
                problems.append(str(e))
                self.archs[entry["name"]] = None
        if problems:
            raise PlanError("\n".join(problems))
        self._check_hessian_needed()
        for exp in ANALYSES:
            if EXPERIMENTS[exp].section is None:
                self._check_experiment(exp)
        self._check_flatness_hessian()

    # --- checks across keys ----------------------------------------------------------------------

    def _check_hessian_needed(self) -> None:
        exps = self.config["experiments"]
        if exps["pruning_theory"]["enabled"] and not exps["hessian"]["enabled"]:
            raise PlanError(
                "experiments.pruning_theory needs experiments.hessian (it reads the Hessian "
                "spectrum): enable hessian or set pruning_theory.enabled: false"
            )

    def _check_experiment(self, exp: str) -> None:
        """An experiment's architectures, seeds and levels must exist in the runs it uses."""
        sec = self.config["experiments"][exp]
        names = sec["architectures"]
        unknown = sorted(set(names or []) - set(self.archs))
        if unknown:
            raise PlanError(
                f"experiments.{exp}.architectures: no architecture named {', '.join(unknown)}; "
                f"the config has {', '.join(self.archs)}"
            )
        for arch in self.archs.values():
            if names is not None and arch.name not in names:
                continue
            levels, top = sec["levels"], self.last_level(arch, exp)
            if isinstance(levels, list) and any(level > top for level in levels):
                raise PlanError(
                    f"experiments.{exp}.levels: {levels} goes past level {top}, the last level "
                    f"{exp} can run at for architecture {arch.name!r} (levels: {arch.levels}); use "
                    f"levels 0 ... {top} or `all`"
                )
            extra = sorted(set(sec["seeds"] or []) - set(arch.seeds))
            if extra:
                raise PlanError(
                    f"experiments.{exp}.seeds: {extra} not among the seeds of architecture "
                    f"{arch.name!r} ({arch.seeds}); use some of those, or list the experiment's "
                    f"architectures in experiments.{exp}.architectures"
                )

    def _check_flatness_hessian(self) -> None:
        """With use_hessian, E4 must have run at every run and level where E7 runs, in files E7 can read."""
        if not (self.enabled("flatness") and self.reads_hessian("flatness")):
            return
        if self.granularity("hessian") == "level" and self.granularity("flatness") == "run":
            raise PlanError(
                "experiments.flatness.granularity: E7 reads E4's output, which comes per level "
                "(experiments.hessian.granularity level); set experiments.flatness.granularity: "
                "level, or experiments.flatness.use_hessian: false"
            )
        for arch in self.archs.values():
            missing = [
                (t, s, level)
                for t, s in self.runs(arch, "flatness")
                for level in self.experiment_levels(arch, "flatness")
                if (t, s) not in self.runs(arch, "hessian") or level not in self.experiment_levels(arch, "hessian")
            ]
            if missing:
                t, s, level = missing[0]
                raise PlanError(
                    f"experiments.flatness.use_hessian: E7 runs where E4 does not (architecture "
                    f"{arch.name!r}, rewind step {t}, seed {s}, level {level}); widen "
                    f"experiments.hessian (levels, seeds, architectures) or set "
                    f"experiments.flatness.use_hessian: false"
                )

    def data_missing(self) -> list[str]:
        """The data check's message for every architecture whose data set is not on disk."""
        return [m for m in map(data_missing, self.archs.values()) if m]

    def fabricated_data(self) -> list[str]:
        """A warning for every architecture whose data set folder holds fabricated test data."""
        return [
            f"architectures[{arch.name}] reads fabricated test data ({data_folder(arch.data)} has a "
            f"{FABRICATED} file): its results mean nothing"
            for arch in self.archs.values()
            if is_fabricated(arch.data)
        ]

    def incomplete_runs(self) -> list[str]:
        """A message for every run (granularity `run`) whose imp.nc exists while files of its IMP folder
        that imp.nc and the analyses stand on are gone: Snakemake cannot see them (they are not outputs
        of any rule), so the workflow refuses to start (dry runs too) and names the repair instead."""
        if self.granularity("imp") != "run":
            return []
        out = []
        for arch in self.archs.values():
            for t, s in self.runs(arch):
                base = Path(self.paths.run_of(arch.name, t, s))
                if not (base / "imp.nc").exists():
                    continue
                missing = [f for f in self.imp_files(arch, t, s) if not Path(f).exists()]
                if missing:
                    shown = ", ".join(str(Path(f).relative_to(base / "run")) for f in missing[:4])
                    more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
                    out.append(
                        f"{base}/run is missing {shown}{more}, which {base}/imp.nc and the run's analyses stand "
                        f"on: remove {base}/imp.nc and run snakemake again (its job retrains only what is missing)"
                    )
        return out

    # --- experiments -----------------------------------------------------------------------------

    def section(self, exp: str) -> dict:
        """An experiment's config section; one with a registry `section` (E5) runs where that one
        (E4) runs: its levels, seeds, architectures and granularity, with its own `enabled`."""
        exps = self.config["experiments"]
        shared = EXPERIMENTS[exp].section
        if shared is not None:
            return {**exps[shared], "enabled": exps[exp]["enabled"]}
        return exps[exp]

    def enabled(self, exp: str) -> bool:
        return self.config["experiments"][exp]["enabled"]

    def runs(self, arch: Arch, exp: str = "imp") -> list[tuple[int, int]]:
        """(rewind step, seed) of the IMP runs of an architecture that an experiment runs on."""
        if exp == "imp":
            return [(t, s) for t in arch.rewind_steps for s in arch.seeds]
        sec = self.section(exp)
        if sec.get("architectures") is not None and arch.name not in sec["architectures"]:
            return []
        return [(t, s) for t in arch.rewind_steps for s in (sec.get("seeds") or arch.seeds)]

    def last_level(self, arch: Arch, exp: str) -> int:
        """The last level an experiment can run at: one short of IMP's when it needs level L+1."""
        return arch.levels - 1 if EXPERIMENTS[exp].needs_next_level else arch.levels

    def experiment_levels(self, arch: Arch, exp: str) -> list[int]:
        """Levels an experiment runs at for an architecture."""
        levels = self.section(exp)["levels"]
        if levels == "all":
            return list(range(self.last_level(arch, exp) + 1))
        if levels == "none":
            return []
        return sorted(levels)

    def granularity(self, exp: str) -> str:
        """`run` or `level`: whether an experiment has one job per run or one per run and level."""
        if exp == "imp":
            return self.config["granularity"]
        return self.section(exp).get("granularity") or self.config["granularity"]

    def reads_hessian(self, exp: str) -> bool:
        """Whether an experiment's jobs read E4's output of the same run and level (`--hessian`)."""
        exps = self.config["experiments"]
        if exp == "pruning_theory":
            return True
        return exp == "flatness" and exps["flatness"]["use_hessian"] and exps["hessian"]["enabled"]

    def available(self, arch: Arch, exp: str) -> bool:
        """Whether the aggregate of (architecture, experiment) is among the workflow's results."""
        if exp == "imp":
            return True
        return bool(self.enabled(exp) and self.experiment_levels(arch, exp) and self.runs(arch, exp))

    # --- result files ----------------------------------------------------------------------------

    def imp_files(self, arch: Arch, rewind: int, seed: int) -> list[str]:
        """The files of a finished IMP folder (the layout of :mod:`unmasking.imp`): run.json, w_0, w_t,
        and per level w_L and its metrics, and (L ≥ 1) m_L and its pruning statistics."""
        run = f"{self.paths.run_of(arch.name, rewind, seed)}/run"
        files = [f"{run}/run.json", f"{run}/init.pt", f"{run}/rewind.pt"]
        for level in range(arch.levels + 1):
            files += [f"{run}/level_{level:02d}/{name}" for name in ("final.pt", "metrics.json")]
            if level > 0:
                files += [f"{run}/level_{level:02d}/{name}" for name in ("mask.pt", "prune.json")]
        return files

    def per_run_targets(self) -> list[str]:
        """Every per-run file that rules write and aggregates stand on: the per-job results and, with
        IMP per level, the IMP folders' files.  `rule all` asks for them too, so that a deleted one is
        regenerated (and what stands on it rebuilt) instead of the aggregates standing on a file that is
        gone: Snakemake does not rerun a job for an input that is missing while its outputs exist."""
        out = []
        for arch in self.archs.values():
            for exp in ("imp", *ANALYSES):
                if self.available(arch, exp):
                    out += [f for f, _ in self.per_job_results(arch, exp)]
            if self.granularity("imp") == "level":
                for t, s in self.runs(arch):
                    out += [f for f in self.imp_files(arch, t, s) if not f.endswith(("run.json", "init.pt"))]
        return out

    def per_job_results(self, arch: Arch, exp: str) -> list[tuple[str, int]]:
        """The per-job netCDF files that the aggregate of (architecture, experiment) combines,
        as (file, rewind step) pairs."""
        files = []
        for t, s in self.runs(arch, exp):
            base = self.paths.run_of(arch.name, t, s)
            if exp == "imp" or self.granularity(exp) == "run":
                files.append((f"{base}/{exp}.nc", t))
            else:
                files += [(f"{base}/{exp}/level_{level:02d}.nc", t) for level in self.experiment_levels(arch, exp)]
        return files

    def result_targets(self) -> list[str]:
        """Every aggregated dataset of the config: E1 (imp) and each enabled analysis with levels and runs."""
        return [
            self.paths.aggregate(arch.name, exp)
            for arch in self.archs.values()
            for exp in ("imp", *ANALYSES)
            if self.available(arch, exp)
        ]

    # --- figures ---------------------------------------------------------------------------------

    def figure_splits(self, fig_id: str) -> list[str]:
        """`test`, and `train` for a figure with a train-error variant or whose experiment evaluates
        the train split when asked to (E9's `splits`)."""
        fig = FIGURES[fig_id]
        asked = any("train" in (self.section(e).get("splits") or []) for e in fig.needs if e != "imp")
        return ["test", "train"] if fig.train_variant or asked else ["test"]

    def figure_made(self, arch: Arch, fig_id: str, split: str = "test") -> bool:
        """Whether the workflow makes a figure (variant) for an architecture: when its experiments ran.
        A figure that shows any of its `uses` (Fig. 6: theory or experiment) needs one of them; its
        train variant one that has errors."""
        fig = FIGURES[fig_id]
        if not all(self.available(arch, exp) for exp in fig.needs):
            return False
        if fig.needs_any_use:
            shown = [e for e in fig.uses if split == "test" or EXPERIMENTS[e].has_errors]
            return any(self.available(arch, exp) for exp in shown)
        return True

    def figure_inputs(self, arch: Arch, fig_id: str) -> list[str]:
        """The aggregates a figure reads: those of its needed and used experiments that exist."""
        return [self.paths.aggregate(arch.name, exp) for exp in FIGURES[fig_id].inputs if self.available(arch, exp)]

    def figure_targets(self) -> list[str]:
        """Every figure (pdf and png) the config makes, per figure, variant and architecture, then the claims."""
        out = []
        for fig_id in FIGURES:
            for split in self.figure_splits(fig_id):
                stem = self.paths.figure_stem(fig_id, split)
                out += [
                    f"{stem.format(arch=arch.name)}{ext}"
                    for arch in self.archs.values()
                    if self.figure_made(arch, fig_id, split)
                    for ext in (".pdf", ".png")
                ]
        return out + list(self.paths.claims.values())

    def targets(self) -> list[str]:
        """What `rule all` builds: the per-run files, the aggregates, the figures and the claims report."""
        return self.per_run_targets() + self.result_targets() + self.figure_targets()
