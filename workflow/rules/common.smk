"""Helpers of the workflow: config checks, the plan of IMP runs, paths, command lines, resources.

The root Snakefile includes this file first, checks the config (`check_config`), fills the
schema's defaults (`validate`), builds `PLAN` (`plan_workflow`) and then includes the rule
files, which read `PLAN`, the paths below and the helper functions.
"""

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

# Analyses (SPEC section 3): config/results name -> `unmasking` subcommand.
EXPERIMENTS = {
    "interpolation": "interpolate",
    "perturbation": "perturb",
    "hessian": "hessian",
    "pruning_theory": "pruning-theory",
    "pruning_ratio": "pruning-ratio",
    "flatness": "flatness",
    "small_weights": "small-weights",
    "landscape": "landscape",
}
# Scheduling: IMP first (every analysis waits for it), then the long analyses, so that no long
# job starts last and runs alone on an otherwise idle machine.
PRIORITY = {
    "imp": 100,
    "perturbation": 60,  # the longest single job of the embedded default
    "pruning_ratio": 50,
    "hessian": 50,
    "landscape": 20,
}
# Experiments that retrain networks (their commands take --models-at-once and --compile).
RETRAINING = ("perturbation", "pruning_ratio")
# Experiments that need level L+1 trained at level L (`all` stops one level short).
NEEDS_NEXT_LEVEL = ("landscape",)
# Keys of an experiment's config section that are not command-line options.
NOT_OPTIONS = (
    "enabled",
    "levels",
    "seeds",
    "architectures",
    "granularity",
    "use_hessian",
)

# Figure rules (workflow/rules/figures.smk) append their outputs here; `rule all` builds them.
FIGURE_TARGETS = []

# Resources of a rule that no config sets.
FALLBACK_RESOURCES = {"threads": 1, "mem_mb": 2000, "runtime": 60, "gpu": 0}

# Software of the jobs. Without --use-conda (the default), jobs run the `unmasking` command and
# the Python of the environment Snakemake runs in (an un-activated virtual environment works
# too). With --use-conda, jobs run in workflow/envs/unmasking.yaml with this checkout's src/ on
# PYTHONPATH.
CONDA_ENV = "../envs/unmasking.yaml"
USE_CONDA = "CONDA" in {m.name for m in workflow.deployment_settings.deployment_method}
_BIN = Path(sys.executable).parent
if USE_CONDA:
    UNMASKING, PYTHON = "python -m unmasking", "python"
    os.environ.update(
        PYTHONPATH=os.pathsep.join(
            filter(
                None, [str(Path(workflow.basedir, "src")), os.environ.get("PYTHONPATH")]
            )
        )
    )
else:
    UNMASKING = (
        shlex.quote(str(_BIN / "unmasking"))
        if (_BIN / "unmasking").exists()
        else "unmasking"
    )
    PYTHON = shlex.quote(sys.executable)


def _key_path(config, path):
    """`architectures[cnn].set` from a jsonschema error path (names list items by their `name`)."""
    out, node = "", config
    for part in path:
        if isinstance(part, int):
            name = (
                node[part].get("name")
                if isinstance(node, list) and isinstance(node[part], dict)
                else None
            )
            out += f"[{name or part}]"
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "(top level)"


def _explain(config, error):
    """One line per schema violation: the key, what is wrong, and the fix."""
    key = _key_path(config, error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        valid = ", ".join(sorted(schema.get("properties", {}))) or "none"
        where = f"{key}." if error.absolute_path else ""
        return (
            f"unknown key {', '.join(where + k for k in extra)}: remove it or fix its spelling "
            f"(valid keys here: {valid})"
        )
    if error.validator == "required":
        return (
            f"{key}: {error.message}; add it (see workflow/schemas/config.schema.yaml)"
        )
    if error.validator == "propertyNames":
        return f"{key}: key {error.instance!r} is not a dotted recipe key such as train.steps"
    wanted = schema.get("description", "")
    if error.validator in ("oneOf", "anyOf"):
        options = []
        for sub in schema[error.validator]:
            options.append(
                sub.get("type")
                or (
                    "one of " + ", ".join(map(str, sub["enum"]))
                    if "enum" in sub
                    else "?"
                )
            )
        wanted = (
            "expected "
            + " or ".join(map(str, options))
            + (f" ({wanted})" if wanted else "")
        )
        return f"{key}: {error.instance!r} is not valid; {wanted}"
    return f"{key}: {error.message}" + (f" ({wanted})" if wanted else "")


def check_config(config, schema_file):
    """Stop with a message per bad key (unknown key, wrong type, out of range) before any job."""
    import jsonschema

    schema = yaml.safe_load(Path(workflow.basedir, schema_file).read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(config),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        lines = "\n".join(f"  - {_explain(config, e)}" for e in errors)
        raise WorkflowError(
            f"invalid workflow configuration:\n{lines}\n"
            f"Fix the config file (or --config/--configfile); the schema with every key, "
            f"type and default is {schema_file}."
        )


@dataclasses.dataclass
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
    hashes: dict  # rewind step -> recipe hash (as the run folder's run.json records it)
    data_missing: str | None = None

    def set_args(self, rewind):
        """`--set` items: the config's overrides and the rewind step. The last level is not part
        of the recipe (jobs get `--levels`), so raising `levels` continues the runs."""
        items = {**self.overrides, "prune.rewind_step": int(rewind)}
        return [f"{k}={json.dumps(v)}" for k, v in items.items()]


def _arch_from_config(entry, seeds):
    from unmasking.foundations.hparams import ConfigError
    from unmasking.foundations.recipes import build_recipe

    name = entry["name"]
    for key in ("prune.levels", "prune.rewind_step"):
        if key in entry["set"]:
            field = "levels" if key == "prune.levels" else "rewind_steps"
            raise WorkflowError(
                f"architectures[{name}].set: {key} is set by architectures[{name}].{field}; "
                f"move it there"
            )
    base_args = [f"{k}={json.dumps(v)}" for k, v in entry["set"].items()]
    try:
        base = build_recipe(entry["recipe"], None, base_args)
    except ConfigError as e:
        key = "recipe" if "unknown recipe" in str(e) else "set"
        raise WorkflowError(f"architectures[{name}].{key}: {e}") from None
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
        hashes={},
    )
    for t in arch.rewind_steps:
        try:
            arch.hashes[t] = build_recipe(arch.recipe, None, arch.set_args(t)).hash()
        except ConfigError as e:
            raise WorkflowError(f"architectures[{name}].rewind_steps: {e}") from None
    arch.data_missing = _data_missing(arch, base)
    return arch


def _data_missing(arch, recipe):
    """The data check's message when the architecture's data set is not on disk, else None."""
    from unmasking.data import DataMissingError, check_available

    # as in the jobs: the recipe's data.root, else UNMASKING_DATA (data_root when configured)
    data = dataclasses.replace(recipe.data, root=recipe.data.root or arch.data_root)
    try:
        check_available(data)
    except DataMissingError as e:
        return (
            f"architectures[{arch.name}].data_root: {e} In this workflow, set "
            f"architectures[{arch.name}].data_root (or $UNMASKING_DATA) to that folder."
        )
    return None


def _check_experiment(exp, sec, archs):
    """An experiment's architectures, seeds and levels must exist in the runs it uses."""
    names = sec["architectures"]
    unknown = sorted(set(names or []) - set(archs))
    if unknown:
        raise WorkflowError(
            f"experiments.{exp}.architectures: no architecture named {', '.join(unknown)}; "
            f"the config has {', '.join(archs)}"
        )
    for arch in archs.values():
        if names is not None and arch.name not in names:
            continue
        levels, top = sec["levels"], last_level(arch, exp)
        if isinstance(levels, list) and any(level > top for level in levels):
            raise WorkflowError(
                f"experiments.{exp}.levels: {levels} goes past level {top}, the last level "
                f"{exp} can run at for architecture {arch.name!r} (levels: {arch.levels}); use "
                f"levels 0 ... {top} or `all`"
            )
        extra = sorted(set(sec["seeds"] or []) - set(arch.seeds))
        if extra:
            raise WorkflowError(
                f"experiments.{exp}.seeds: {extra} not among the seeds of architecture "
                f"{arch.name!r} ({arch.seeds}); use some of those, or list the experiment's "
                f"architectures in experiments.{exp}.architectures"
            )


def reads_hessian(exp):
    """Whether an experiment's jobs read E4's output of the same run and level (`--hessian`)."""
    exps = config["experiments"]
    if exp == "pruning_theory":
        return True
    return (
        exp == "flatness"
        and exps["flatness"]["use_hessian"]
        and exps["hessian"]["enabled"]
    )


def _check_flatness_hessian(archs):
    """With use_hessian, E4 must have run at every run and level where E7 runs, in files E7 can read."""
    if not (enabled("flatness") and reads_hessian("flatness")):
        return
    if exp_granularity("hessian") == "level" and exp_granularity("flatness") == "run":
        raise WorkflowError(
            "experiments.flatness.granularity: E7 reads E4's output, which comes per level "
            "(experiments.hessian.granularity level); set experiments.flatness.granularity: "
            "level, or experiments.flatness.use_hessian: false"
        )
    for arch in archs.values():
        missing = [
            (t, s, level)
            for t, s in runs(arch, "flatness")
            for level in experiment_levels(arch, "flatness")
            if (t, s) not in runs(arch, "hessian")
            or level not in experiment_levels(arch, "hessian")
        ]
        if missing:
            t, s, level = missing[0]
            raise WorkflowError(
                f"experiments.flatness.use_hessian: E7 runs where E4 does not (architecture "
                f"{arch.name!r}, rewind step {t}, seed {s}, level {level}); widen "
                f"experiments.hessian (levels, seeds, architectures) or set "
                f"experiments.flatness.use_hessian: false"
            )


def plan_workflow(config):
    """Architectures with their recipes resolved; checks names, levels and the data sets."""
    archs = {}
    for entry in config["architectures"]:
        if entry["name"] in archs:
            raise WorkflowError(
                f"architectures: the name {entry['name']!r} appears twice; names must be unique"
            )
        archs[entry["name"]] = _arch_from_config(entry, config["seeds"])
    exps = config["experiments"]
    if exps["pruning_theory"]["enabled"] and not exps["hessian"]["enabled"]:
        raise WorkflowError(
            "experiments.pruning_theory needs experiments.hessian (it reads the Hessian "
            "spectrum): enable hessian or set pruning_theory.enabled: false"
        )
    for exp in EXPERIMENTS:
        if exp != "pruning_theory":
            _check_experiment(exp, exps[exp], archs)
    _check_flatness_hessian(archs)
    define_paths(config["name"])
    missing = [a.data_missing for a in archs.values() if a.data_missing]
    for message in missing:
        logger.warning(
            f"data check: {message}\n(a dry run lists the jobs anyway; a real run stops before any job)"
        )
    return archs


def fail_if_data_missing():
    """Called by `onstart` (real runs only, before any job): stop when a data set is absent."""
    missing = [a.data_missing for a in PLAN.values() if a.data_missing]
    if missing:
        raise WorkflowError(
            "data missing, no job was run:\n" + "\n".join(f"  - {m}" for m in missing)
        )


# ---------------------------------------------------------------------------------------------
# Paths. A run is one (architecture, rewind step, seed); its IMP folder is RUN/run.


def define_paths(name):
    """RESULTS, LOGS, BENCHMARKS and the run patterns RUN, RUN_LOG, RUN_BENCHMARK (wildcards
    arch, rewind, seed) of config `name`."""
    global RESULTS, LOGS, BENCHMARKS, RUN, RUN_LOG, RUN_BENCHMARK
    RESULTS, LOGS, BENCHMARKS = f"results/{name}", f"logs/{name}", f"benchmarks/{name}"
    RUN = f"{RESULTS}/{{arch}}/rewind_{{rewind}}/seed_{{seed}}"
    RUN_LOG = f"{LOGS}/{{arch}}/rewind_{{rewind}}/seed_{{seed}}"
    RUN_BENCHMARK = f"{BENCHMARKS}/{{arch}}/rewind_{{rewind}}/seed_{{seed}}"


def run_file(name):
    """Pattern of a file of a run (wildcards arch, rewind, seed), e.g. run_file("imp.nc")."""
    return f"{RUN}/{name}"


def run_log(name):
    return f"{RUN_LOG}/{name}"


def run_benchmark(name):
    """Snakemake's benchmark file of a job (wall and CPU time, memory): sizes cluster resources."""
    return f"{RUN_BENCHMARK}/{name}"


def run_dir(wildcards):
    return f"{RESULTS}/{wildcards.arch}/rewind_{wildcards.rewind}/seed_{wildcards.seed}/run"


def level_file(wildcards, level, name):
    return f"{run_dir(wildcards)}/level_{int(level):02d}/{name}"


def imp_level_files(wildcards, first, last, masks_through=None):
    """IMP files a job reads: w_L and its metrics for levels first ... last, and the masks and
    pruning statistics of levels first+1 ... masks_through (default last), within the run's levels.
    """
    top = PLAN[wildcards.arch].levels
    files = []
    for level in range(first, min(last, top) + 1):
        files += [
            level_file(wildcards, level, "final.pt"),
            level_file(wildcards, level, "metrics.json"),
        ]
    for level in range(
        first + 1, min(last if masks_through is None else masks_through, top) + 1
    ):
        files += [
            level_file(wildcards, level, "mask.pt"),
            level_file(wildcards, level, "prune.json"),
        ]
    return files


def train_level_inputs(wildcards):
    """w_t, and m_L for L >= 1 (m_0 is the dense mask, made by the job)."""
    level = int(wildcards.level)
    files = {"rewind": f"{run_dir(wildcards)}/rewind.pt"}
    if level > 0:
        files["mask"] = level_file(wildcards, level, "mask.pt")
    return files


def section(exp):
    """An experiment's config section (E5 runs where E4 runs: its levels, seeds, architectures)."""
    exps = config["experiments"]
    if exp == "pruning_theory":
        return {**exps["hessian"], "enabled": exps["pruning_theory"]["enabled"]}
    return exps[exp]


def runs(arch, exp="imp"):
    """(rewind step, seed) of the IMP runs of an architecture that an experiment runs on."""
    seeds = arch.seeds if exp == "imp" else (section(exp).get("seeds") or arch.seeds)
    archs = None if exp == "imp" else section(exp).get("architectures")
    if archs is not None and arch.name not in archs:
        return []
    return [(t, s) for t in arch.rewind_steps for s in seeds]


def last_level(arch, exp):
    return arch.levels - 1 if exp in NEEDS_NEXT_LEVEL else arch.levels


def experiment_levels(arch, exp):
    """Levels an experiment runs at for an architecture."""
    levels = section(exp)["levels"]
    if levels == "all":
        return list(range(last_level(arch, exp) + 1))
    if levels == "none":
        return []
    return sorted(levels)


def exp_granularity(exp):
    """`run` or `level`: whether an analysis has one job per run or one per run and level."""
    if exp == "imp":
        return config["granularity"]
    if exp == "pruning_theory":
        return exp_granularity("hessian")
    return section(exp).get("granularity") or config["granularity"]


def enabled(exp):
    return config["experiments"][exp]["enabled"]


def per_job_results(arch, exp):
    """The per-job netCDF files that the aggregate of (architecture, experiment) combines,
    as (file, rewind step) pairs."""
    files = []
    for t, s in runs(arch, exp):
        base = RUN.format(arch=arch.name, rewind=t, seed=s)
        if exp == "imp" or exp_granularity(exp) == "run":
            files.append((f"{base}/{exp}.nc", t))
        else:
            levels = experiment_levels(arch, exp)
            files += [(f"{base}/{exp}/level_{level:02d}.nc", t) for level in levels]
    return files


def aggregate_inputs(wildcards):
    return [f for f, _ in per_job_results(PLAN[wildcards.arch], wildcards.exp)]


def aggregate_rewind_steps(wildcards):
    return [t for _, t in per_job_results(PLAN[wildcards.arch], wildcards.exp)]


def aggregate_path(arch_name, exp):
    """Where the combined dataset of an experiment for an architecture goes."""
    return f"{RESULTS}/{arch_name}/{exp}.nc"


def result_targets():
    """Every aggregated dataset of the config: E1 (imp) and each enabled analysis with levels."""
    out = []
    for arch in PLAN.values():
        out.append(aggregate_path(arch.name, "imp"))
        out += [
            aggregate_path(arch.name, exp)
            for exp in EXPERIMENTS
            if enabled(exp) and experiment_levels(arch, exp) and runs(arch, exp)
        ]
    return out


def all_targets(wildcards):
    return result_targets() + list(FIGURE_TARGETS)


# ---------------------------------------------------------------------------------------------
# Command lines and resources.


def common_flags():
    flags = [] if config["progress"] else ["--quiet"]
    if config["device"]:
        flags += ["--device", config["device"]]
    return " ".join(flags)


def data_env(wildcards):
    """`UNMASKING_DATA=...` for the job's export line when the architecture has a data_root."""
    root = PLAN[wildcards.arch].data_root
    return f"UNMASKING_DATA={shlex.quote(root)}" if root else ""


def with_exports(command):
    """A job's shell command, after exports of torch's threads and torch.compile's compile workers
    (the rule's threads: one thread compiles in-process, without a pool of worker processes) and
    of the architecture's data directory."""
    exports = (
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "TORCHINDUCTOR_COMPILE_THREADS={threads} {params.data_env}"
    )
    return f"{exports}; {command}"


def recipe_args(wildcards):
    """`--recipe R --seed S --set ...` of a run (the same arguments give the same recipe hash)."""
    arch = PLAN[wildcards.arch]
    sets = " ".join(shlex.quote(s) for s in arch.set_args(wildcards.rewind))
    return (
        f"--recipe {shlex.quote(arch.recipe)} --seed {int(wildcards.seed)} --set {sets}"
    )


def recipe_hash(wildcards):
    return PLAN[wildcards.arch].hashes[int(wildcards.rewind)]


def fresh_run_cmd(wildcards):
    """Shell command that removes a run folder made with another recipe, so the run starts over."""
    return (
        f"{PYTHON} {shlex.quote(str(Path(workflow.basedir, 'workflow/scripts/fresh_run.py')))} "
        f"{run_dir(wildcards)} {recipe_hash(wildcards)} {int(wildcards.seed)}"
    )


def _option(key, value):
    flag = f"--{key.replace('_', '-')}"
    if value is None or value is False:
        return ""
    if value is True:
        return flag
    if isinstance(value, list):
        return f"{flag} " + " ".join(shlex.quote(str(v)) for v in value)
    return f"{flag} {shlex.quote(str(value))}"


def experiment_options(exp):
    """The experiment's command-line options from its config section (plus the thresholds E6 needs)."""
    section = dict(config["experiments"][exp])
    if exp == "pruning_ratio":
        section["eps_barrier"] = config["thresholds"]["barrier"]
        section["eps_match"] = config["thresholds"]["match_floor"]
    return " ".join(
        o
        for o in (_option(k, v) for k, v in section.items() if k not in NOT_OPTIONS)
        if o
    )


def compile_arg(wildcards):
    """`--compile` for the architecture's training jobs when its config entry asks for it."""
    return "--compile" if PLAN[wildcards.arch].compile else ""


def retraining_args(exp):
    """`--models-at-once K [--compile]` of the experiments that retrain (E3, E6), per architecture."""

    def args(wildcards):
        if exp not in RETRAINING:
            return ""
        arch = PLAN[wildcards.arch]
        return f"--models-at-once {arch.models_at_once} {compile_arg(wildcards)}"

    return args


def levels_arg(exp):
    """`--levels` of an analysis job: all the experiment's levels (granularity run) or the job's level."""

    def levels(wildcards):
        if "level" in wildcards.keys():
            return str(int(wildcards.level))
        return " ".join(
            str(level) for level in experiment_levels(PLAN[wildcards.arch], exp)
        )

    return levels


def resource(rule_name, key):
    """Resource `key` of a rule: the architecture's rule entry, its default, the top-level rule
    entry, the top-level default, then FALLBACK_RESOURCES."""

    def value(wildcards):
        arch = PLAN[wildcards.arch] if "arch" in wildcards.keys() else None
        for table in ((arch.resources if arch else {}), config["resources"]):
            for entry in (table.get(rule_name, {}), table.get("default", {})):
                if key in entry:
                    return entry[key]
        return FALLBACK_RESOURCES[key]

    return value


wildcard_constraints:
    arch="[A-Za-z0-9][A-Za-z0-9_-]*",
    rewind="[0-9]+",
    seed="[0-9]+",
    level="[0-9][0-9]+",
