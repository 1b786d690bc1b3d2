"""The plan, paths, input functions, command lines and resources of the rules.

The root Snakefile includes this file first. It checks the config against the schema
(`check_config`: one line per bad key), fills the schema's defaults (`validate`) and plans the
workflow (`PLAN`, an `unmasking.workflow.Plan`: architectures, runs, levels, targets; it
raises `PlanError` for a config that cannot run). Everything that decides what runs lives in
that importable, unit-tested module (tests/test_plan.py); experiments and figures come from
`unmasking.foundations.registry`. What stays here is how Snakemake sees the plan: the paths,
the input functions and the command lines of the rules included after this file.
"""

import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from unmasking.foundations import registry
from unmasking.workflow import Plan, PlanError, check_config, shrink
from unmasking.workflow.plan import FALLBACK_RESOURCES
from unmasking.workflow.report import load_claims, report_verdicts, verdict_text

SCHEMA = "workflow/schemas/config.schema.yaml"

try:
    check_config(config, SCHEMA, workflow.basedir)
    validate(config, "../schemas/config.schema.yaml")  # fills the defaults
    # A `smoke` section (config/smoke.yaml): this config's structure at shrunk sizes, as <name>-smoke.
    if config.get("smoke"):
        Plan(
            config
        )  # the config itself must run: its smoke would hide what it cannot do
        _smoke = shrink(config)
        config.clear()
        config.update(_smoke)
    PLAN = Plan(config)
except PlanError as e:
    raise WorkflowError(str(e)) from None

# A run (IMP per run) whose IMP folder lost files that its imp.nc and analyses stand on: Snakemake cannot
# see them (they are outputs of no rule), so the workflow refuses to start, dry runs included, naming
# the repair.
_INCOMPLETE = PLAN.incomplete_runs()
if _INCOMPLETE:
    raise WorkflowError(
        "run folders incomplete, no job was run:\n"
        + "\n".join(f"  - {m}" for m in _INCOMPLETE)
    )

# Fabricated test data (workflow/scripts/fabricate_data.py) where a config reads its data: said before any job.
for _message in PLAN.fabricated_data():
    logger.warning(f"data check: {_message}")

# A data set that is not on disk stops a real run before any job; a dry run lists the jobs anyway.
DATA_MISSING = PLAN.data_missing()
for _message in DATA_MISSING:
    logger.warning(
        f"data check: {_message}\n(a dry run lists the jobs anyway; a real run stops before any job)"
    )


def fail_if_data_missing():
    """Called by `onstart` (real runs only, before any job): stop when a data set is absent."""
    if DATA_MISSING:
        raise WorkflowError(
            "data missing, no job was run:\n"
            + "\n".join(f"  - {m}" for m in DATA_MISSING)
        )


# Keys of an experiment's config section that are not command-line options.
NOT_OPTIONS = (
    "enabled",
    "levels",
    "seeds",
    "architectures",
    "granularity",
    "use_hessian",
)


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


# ---------------------------------------------------------------------------------------------
# Paths (unmasking.workflow.Paths of the config's name). A run is one (architecture, rewind
# step, seed); RUN, RUN_LOG and RUN_BENCHMARK are patterns with the wildcards arch, rewind and
# seed, and a run's IMP folder is RUN/run.

PATHS = PLAN.paths
RESULTS, LOGS, BENCHMARKS, FIGURE_DIR = (
    PATHS.results,
    PATHS.logs,
    PATHS.benchmarks,
    PATHS.figures,
)
RUN, RUN_LOG, RUN_BENCHMARK = PATHS.run, PATHS.run_log, PATHS.run_benchmark
CLAIMS = PATHS.claims


def run_file(name):
    """Pattern of a file of a run (wildcards arch, rewind, seed), e.g. run_file("imp.nc")."""
    return f"{RUN}/{name}"


def run_log(name):
    return f"{RUN_LOG}/{name}"


def run_benchmark(name):
    """Snakemake's benchmark file of a job (wall and CPU time, memory): sizes cluster resources."""
    return f"{RUN_BENCHMARK}/{name}"


def run_dir(wildcards):
    return f"{PATHS.run_of(wildcards.arch, wildcards.rewind, wildcards.seed)}/run"


def level_file(wildcards, level, name):
    return f"{run_dir(wildcards)}/level_{int(level):02d}/{name}"


def analysis_file(exp, root, suffix):
    """Output, log or benchmark of an analysis job under `root` (RUN, RUN_LOG, RUN_BENCHMARK):
    one per run, or one per run and level (wildcard level)."""
    if PLAN.granularity(exp) == "level":
        return f"{root}/{exp}/level_{{level}}.{suffix}"
    return f"{root}/{exp}.{suffix}"


# ---------------------------------------------------------------------------------------------
# Input functions.


def all_targets(wildcards):
    """The aggregates, the figures and the claims report of the config."""
    return PLAN.targets()


def imp_level_files(wildcards, first, last, masks_through=None):
    """IMP files a job reads: w_L and its metrics for levels first ... last, and the masks and
    pruning statistics of levels first+1 ... masks_through (default last), within the run's levels.
    """
    top = PLAN.archs[wildcards.arch].levels
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


def analysis_inputs(exp):
    """Inputs of an analysis job: the IMP files of its level and the next when IMP runs per level
    and the job is per level, else the run's imp.nc (the whole run); E5 (and E7 with
    use_hessian) also read E4's output for the same run (and level)."""

    def inputs(wildcards):
        base = PATHS.run_of(wildcards.arch, wildcards.rewind, wildcards.seed)
        per_level = "level" in wildcards.keys()
        if per_level and PLAN.granularity("imp") == "level":
            level = int(wildcards.level)
            files = {
                "rewind": f"{base}/run/rewind.pt",
                "imp": imp_level_files(wildcards, level, level + 1, level + 2),
            }
        else:
            files = {"imp": f"{base}/imp.nc"}
        if PLAN.reads_hessian(exp):
            if PLAN.granularity("hessian") == "level":
                files["hessian"] = f"{base}/hessian/level_{int(wildcards.level):02d}.nc"
            else:
                files["hessian"] = f"{base}/hessian.nc"
        return files

    return inputs


def aggregate_inputs(wildcards):
    return [
        f for f, _ in PLAN.per_job_results(PLAN.archs[wildcards.arch], wildcards.exp)
    ]


def aggregate_rewind_steps(wildcards):
    return [
        t for _, t in PLAN.per_job_results(PLAN.archs[wildcards.arch], wildcards.exp)
    ]


def aggregate_recipe_hashes(wildcards):
    """The recipe hash each per-job file of an aggregate must carry (checked by the aggregation)."""
    arch = PLAN.archs[wildcards.arch]
    return [arch.hashes[t] for _, t in PLAN.per_job_results(arch, wildcards.exp)]


def figure_inputs(fig_id):
    """The aggregates a figure of an architecture reads."""

    def inputs(wildcards):
        return PLAN.figure_inputs(PLAN.archs[wildcards.arch], fig_id)

    return inputs


# ---------------------------------------------------------------------------------------------
# Command lines and resources.


def common_flags():
    flags = [] if config["progress"] else ["--quiet"]
    if config["device"]:
        flags += ["--device", config["device"]]
    return " ".join(flags)


def data_env(wildcards):
    """`UNMASKING_DATA=...` for the job's export line when the architecture has a data_root."""
    root = PLAN.archs[wildcards.arch].data_root
    return f"UNMASKING_DATA={shlex.quote(root)}" if root else ""


# The first line a job appends to its log: a requeued or retried job (SLURM) appends to the log of the
# attempt it continues, so that the interrupted attempt's lines stay readable above.
LOG_HEADER = (
    'echo "=== started $(date "+%Y-%m-%d %H:%M:%S") on $(hostname)'
    '${{SLURM_JOB_ID:+, SLURM job $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}}}" >> {log}'
)


def with_exports(command):
    """A job's shell command (which appends its output to the log), after the log's header line and
    exports of torch's threads and torch.compile's compile workers (the rule's threads: one thread
    compiles in-process, without a pool of worker processes) and of the architecture's data directory.
    """
    exports = (
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "TORCHINDUCTOR_COMPILE_THREADS={threads} {params.data_env}"
    )
    return f"{LOG_HEADER}; {exports}; {command}"


def recipe_args(wildcards):
    """`--recipe R --seed S --set ...` of a run (the same arguments give the same recipe hash)."""
    arch = PLAN.archs[wildcards.arch]
    sets = " ".join(shlex.quote(s) for s in arch.set_args(wildcards.rewind))
    return (
        f"--recipe {shlex.quote(arch.recipe)} --seed {int(wildcards.seed)} --set {sets}"
    )


def recipe_hash(wildcards):
    return PLAN.archs[wildcards.arch].hashes[int(wildcards.rewind)]


def expect_args(wildcards):
    """`--expect-seed S --expect-hash H`: a job refuses a run folder that holds another run."""
    return f"--expect-seed {int(wildcards.seed)} --expect-hash {recipe_hash(wildcards)}"


# The first job of a run removes a run folder made with another recipe or training mode, so the run
# starts over, and refuses one that holds another seed (a moved folder): workflow/scripts/fresh_run.py.
# Its path is part of the shell command, not of a param, so that a copy of the working directory (at
# another path) does not rerun every job.
FRESH_RUN = (
    f"{PYTHON} {shlex.quote(str(Path(workflow.basedir, 'workflow/scripts/fresh_run.py')))} "
    "{params.run} {params.hash} {wildcards.seed} {params.compile} 2>> {log} && "
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
    if exp == "pruning_ratio":  # E6's headline criterion: E5's epsilon on E4's examples
        section["eps_barrier"] = config["thresholds"]["barrier"]
        section["eps_match"] = config["thresholds"]["match_floor"]
        section["epsilon"] = config["experiments"]["pruning_theory"].get("epsilon")
        section["subset_size"] = config["experiments"]["hessian"].get("subset_size")
        section["subset_seed"] = config["experiments"]["hessian"].get("seed")
    return " ".join(
        o
        for o in (_option(k, v) for k, v in section.items() if k not in NOT_OPTIONS)
        if o
    )


def hessian_arg(exp):
    """`--hessian FILE` for the experiments that read E4's output, else nothing."""

    def arg(wildcards, input):
        return f"--hessian {input.hessian}" if PLAN.reads_hessian(exp) else ""

    return arg


def compile_arg(wildcards):
    """`--compile` for the architecture's training jobs when its config entry asks for it."""
    return "--compile" if PLAN.archs[wildcards.arch].compile else ""


def retraining_args(exp):
    """`--models-at-once K [--compile]` of the experiments that retrain (E3, E6), per architecture."""

    def args(wildcards):
        if not registry.EXPERIMENTS[exp].retrains:
            return ""
        arch = PLAN.archs[wildcards.arch]
        return f"--models-at-once {arch.models_at_once} {compile_arg(wildcards)}"

    return args


def levels_arg(exp):
    """`--levels` of an analysis job: all the experiment's levels (granularity run) or the job's level."""

    def levels(wildcards):
        if "level" in wildcards.keys():
            return str(int(wildcards.level))
        return " ".join(
            str(level)
            for level in PLAN.experiment_levels(PLAN.archs[wildcards.arch], exp)
        )

    return levels


def claims_options():
    """The claim thresholds the config sets (`thresholds.barrier`, `thresholds.match_floor`); the
    others are `unmasking claims`' defaults (claims.Thresholds)."""
    th = config["thresholds"]
    return f"--eps-barrier {th['barrier']} --match-floor {th['match_floor']}"


def resource(rule_name, key):
    """Resource `key` of a rule: the architecture's rule entry, its default, the top-level rule
    entry, the top-level default, then FALLBACK_RESOURCES. With `device: cpu` no job asks for a
    GPU (a CPU-only cluster or partition rejects jobs that do)."""

    def value(wildcards):
        if key == "gpu" and config["device"] == "cpu":
            return 0
        arch = PLAN.archs[wildcards.arch] if "arch" in wildcards.keys() else None
        for table in ((arch.resources if arch else {}), config["resources"]):
            for entry in (table.get(rule_name, {}), table.get("default", {})):
                if key in entry:
                    return entry[key]
        return FALLBACK_RESOURCES[key]

    return value


# ---------------------------------------------------------------------------------------------
# The report: figure labels and captions show the claims' verdicts from CLAIMS["json"].


def figure_labels(fig_id, split):
    """Report labels, computed when the report is built (so the verdict is the current one)."""
    claim = registry.FIGURES[fig_id].claim

    def labels(wildcards):
        return {
            "architecture": wildcards.arch,
            "error": split,
            "claim": str(claim),
            "verdict": verdict_text(
                load_claims(CLAIMS["json"]), wildcards.arch, claim, reasons=False
            ),
        }

    return labels


# The captions (rendered by `snakemake --report`) read the verdicts from the config object, the
# only workflow state a caption sees; the key is added after the config was validated.
config["_report_verdicts"] = report_verdicts(load_claims(CLAIMS["json"]), PLAN.archs)


wildcard_constraints:
    arch="[A-Za-z0-9][A-Za-z0-9_-]*",
    rewind="[0-9]+",
    seed="[0-9]+",
    level="[0-9][0-9]+",
