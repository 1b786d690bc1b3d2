"""The planning of the Snakemake workflow (unmasking.workflow), without running Snakemake: schema messages,
the plans of the shipped configs (architectures, runs, levels, per-job results, targets), the checks across
keys, and that experiments and figures come from the registry.

The configs are completed with the schema's defaults by ``snakemake.utils.validate``, as the Snakefile does.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from unmasking.foundations.registry import ANALYSES, EXPERIMENTS, FIGURES
from unmasking.workflow import Plan, PlanError, check_config
from unmasking.workflow.report import report_verdicts, rst_escape, verdict_text

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "workflow/schemas/config.schema.yaml"
ALL_EXPERIMENTS = ("imp", *ANALYSES)


def config_file(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


def overlay(config: dict, **changes) -> dict:
    """``config`` with top-level keys replaced and experiment sections merged key by key (as --configfile)."""
    out = copy.deepcopy(config)
    for key, value in changes.items():
        if key == "experiments":
            for exp, section in value.items():
                out["experiments"][exp] = {**out["experiments"].get(exp, {}), **section}
        else:
            out[key] = value
    return out


def planned(config: dict) -> Plan:
    """The plan of a config, checked and completed as the Snakefile does."""
    config = copy.deepcopy(config)
    check_config(config, SCHEMA, REPO)
    validate(config, str(REPO / SCHEMA))
    return Plan(config)


def schema_message(config: dict) -> str:
    with pytest.raises(PlanError) as error:
        check_config(config, SCHEMA, REPO)
    return str(error.value)


@pytest.fixture(scope="module")
def embedded() -> Plan:
    return planned(config_file("config"))


@pytest.fixture(scope="module")
def paper() -> Plan:
    return planned(config_file("paper"))


@pytest.fixture(scope="module")
def tiny() -> Plan:
    return planned(config_file("test"))


# --- schema messages ----------------------------------------------------------------------------------------


def test_schema_unknown_key_names_the_key_and_the_valid_ones():
    message = schema_message(overlay(config_file("test"), experiments={"perturbation": {"strenghts": [1]}}))
    assert message == (
        "invalid workflow configuration:\n"
        "  - unknown key experiments.perturbation.strenghts: remove it or fix its spelling (valid keys here: "
        "architectures, batch_size, bn_batch_size, bn_batches, bn_mode, enabled, gammas, granularity, levels, "
        "replicates, seeds, strengths)\n"
        "Fix the config file (or --config/--configfile); the schema with every key, type and default is "
        "workflow/schemas/config.schema.yaml."
    )


def test_schema_wrong_type_names_the_architecture_by_its_name():
    message = schema_message(
        overlay(config_file("test"), architectures=[{"name": "cnn", "recipe": "mnist1d-cnn", "levels": "three"}])
    )
    assert (
        "  - architectures[cnn].levels: 'three' is not of type 'integer', 'null' (Last IMP level (density "
        "0.8^levels at 20% per level); null - the recipe's prune.levels.)\n"
    ) in message


def test_schema_one_of_lists_the_alternatives():
    message = schema_message(
        overlay(config_file("test"), experiments={"interpolation": {"levels": "some"}}, device="gpu")
    )
    lines = message.splitlines()[1:-1]
    assert lines == [
        "  - device: 'gpu' is not valid; expected null or string (--device of every command: cpu, cuda, cuda:N, "
        "mps; null - cuda when available. cpu - also no job asks the cluster for a GPU (CPU-only clusters and "
        "partitions).)",
        "  - experiments.interpolation.levels: 'some' is not valid; expected one of all, none or array (Levels to "
        "run an experiment at: `all` (0 ... the architecture's `levels`), `none`, or an explicit list. A level "
        "above an architecture's `levels` is an error.)",
    ]


def test_schema_required_and_recipe_keys():
    config = overlay(config_file("test"), architectures=[{"name": "cnn", "set": {"Train": 1}}, {"recipe": "x"}])
    assert schema_message(config).splitlines()[1:-1] == [
        "  - architectures[cnn]: 'recipe' is a required property; add it (see workflow/schemas/config.schema.yaml)",
        "  - architectures[cnn].set: 'Train' does not match '^[a-z_]+\\\\.[a-z_]+$'",
        "  - architectures[1]: 'name' is a required property; add it (see workflow/schemas/config.schema.yaml)",
    ]


def test_shipped_configs_pass_the_schema():
    for name in ("config", "paper", "test"):
        check_config(config_file(name), SCHEMA, REPO)


# --- the plans of the shipped configs -----------------------------------------------------------------------


def test_embedded_default_architectures(embedded):
    assert list(embedded.archs) == ["cnn", "resnet1d"]
    cnn, res = embedded.archs.values()
    assert (cnn.recipe, cnn.levels, cnn.rewind_steps, cnn.seeds) == ("mnist1d-cnn", 15, [40], [0, 1, 2])
    assert (res.recipe, res.levels, res.rewind_steps, res.seeds) == ("mnist1d-resnet1d", 15, [40], [0, 1, 2])
    assert (cnn.compile, cnn.models_at_once, res.compile, res.models_at_once) == (True, 4, True, 4)
    assert cnn.set_args(40) == ["prune.rewind_step=40"]
    # the recipe hash every run folder records: a change here reruns every IMP run of the default
    assert (cnn.hashes, res.hashes) == ({40: "54a3ccfed9ce6a4d"}, {40: "8206bbc7f47832bf"})
    assert embedded.paths.run_of("cnn", 40, 1) == "results/embedded/cnn/rewind_40/seed_1"


FOUR = [4, 8, 11, 14]
FIVE = [0, 4, 8, 11, 14]
ALL = list(range(16))


@pytest.mark.parametrize(
    "exp, runs, levels",
    [
        ("imp", [0, 1, 2], None),
        ("interpolation", [0, 1, 2], ALL),
        ("perturbation", [0], FOUR),
        ("hessian", [0], FIVE),
        ("pruning_theory", [0], FIVE),
        ("pruning_ratio", [0], FOUR),
        ("flatness", [0], FIVE),
        ("small_weights", [0, 1, 2], ALL),
        ("landscape", [0], [4, 11]),
    ],
)
def test_embedded_default_runs_and_levels(embedded, exp, runs, levels):
    """Every experiment on both architectures, at the same runs and levels."""
    for arch in embedded.archs.values():
        assert embedded.runs(arch, exp) == [(40, s) for s in runs]
        if levels is not None:
            assert embedded.experiment_levels(arch, exp) == levels
    assert embedded.granularity(exp) == "run"


def test_embedded_default_per_job_results(embedded):
    cnn, res = embedded.archs.values()
    run = "results/embedded/cnn/rewind_40/seed_{}"
    assert embedded.per_job_results(cnn, "imp") == [(f"{run.format(s)}/imp.nc", 40) for s in (0, 1, 2)]
    assert embedded.per_job_results(cnn, "pruning_ratio") == [(f"{run.format(0)}/pruning_ratio.nc", 40)]
    assert embedded.per_job_results(res, "hessian") == [("results/embedded/resnet1d/rewind_40/seed_0/hessian.nc", 40)]
    counts = {exp: [len(embedded.per_job_results(a, exp)) for a in (cnn, res)] for exp in ALL_EXPERIMENTS}
    assert counts == {
        "imp": [3, 3],
        "interpolation": [3, 3],
        "perturbation": [1, 1],
        "hessian": [1, 1],
        "pruning_theory": [1, 1],
        "pruning_ratio": [1, 1],
        "flatness": [1, 1],
        "small_weights": [3, 3],
        "landscape": [1, 1],
    }


def test_embedded_default_result_targets(embedded):
    assert embedded.result_targets() == [
        f"results/embedded/{arch}/{exp}.nc" for arch in ("cnn", "resnet1d") for exp in ALL_EXPERIMENTS
    ]


def test_embedded_default_figure_targets(embedded):
    """Every figure and its train-error variant for both architectures."""
    stems = [
        "fig1_landscape",
        "fig2_imp_connectivity",
        "fig2_imp_connectivity_train",
        "fig3_interpolation",
        "fig3_interpolation_train",
        "fig4_robustness",
        "fig4_robustness_train",
        "fig5_hessian",
        "fig6_pruning_ratio",
        "fig6_pruning_ratio_train",
        "fig7_flat_directions",
        "fig8_small_weights",
    ]
    assert embedded.figure_targets() == (
        [
            f"figures/embedded/{arch}/{stem}.{ext}"
            for stem in stems
            for arch in ("cnn", "resnet1d")
            for ext in ("pdf", "png")
        ]
        + [f"figures/embedded/claims.{ext}" for ext in ("json", "md", "html")]
    )
    assert embedded.targets() == embedded.per_run_targets() + embedded.result_targets() + embedded.figure_targets()


def test_rule_all_asks_for_every_per_run_file(embedded, paper):
    """`rule all` asks for the per-job results (so that one deleted under its aggregate is rebuilt) and,
    with IMP per level, for the IMP folders' files that rules write (not run.json and w_0, which the
    first job writes beside w_t)."""
    per_job = [
        f
        for arch in embedded.archs.values()
        for exp in ("imp", *ANALYSES)
        for f, _ in embedded.per_job_results(arch, exp)
    ]
    assert embedded.per_run_targets() == per_job  # IMP per run: its folder is not an output
    r20 = paper.archs["resnet20"]
    files = paper.imp_files(r20, 0, 3)
    run = "results/paper/resnet20/rewind_0/seed_3/run"
    assert files[:3] == [f"{run}/run.json", f"{run}/init.pt", f"{run}/rewind.pt"]
    assert len(files) == 3 + 2 * (r20.levels + 1) + 2 * r20.levels
    assert f"{run}/level_20/final.pt" in files and f"{run}/level_00/mask.pt" not in files
    targets = set(paper.per_run_targets())
    assert set(files[2:]) <= targets and not {f"{run}/run.json", f"{run}/init.pt"} & targets
    assert {f for f, _ in paper.per_job_results(r20, "hessian")} <= targets


def test_incomplete_runs_name_the_missing_files_and_the_repair(tiny, tmp_path, monkeypatch):
    """IMP per run: a run whose imp.nc exists while its folder lost files is reported in one line with
    the repair; a run without imp.nc (not finished: its job redoes it) or a complete one is not."""
    monkeypatch.chdir(tmp_path)
    arch = tiny.archs["cnn"]
    for seed in (0, 1):
        for f in tiny.imp_files(arch, 5, seed):
            Path(f).parent.mkdir(parents=True, exist_ok=True)
            Path(f).write_text("x")
    assert tiny.incomplete_runs() == []
    base = "results/test/cnn/rewind_5/seed_1"
    Path(f"{base}/imp.nc").write_text("x")
    for name in ("level_01/final.pt", "level_02/mask.pt", "rewind.pt"):
        Path(f"{base}/run/{name}").unlink()
    Path("results/test/cnn/rewind_5/seed_0/run/init.pt").unlink()  # seed 0 has no imp.nc
    assert tiny.incomplete_runs() == [
        f"{base}/run is missing rewind.pt, level_01/final.pt, level_02/mask.pt, which {base}/imp.nc and the "
        f"run's analyses stand on: remove {base}/imp.nc and run snakemake again (its job retrains only what is "
        f"missing)"
    ]


def test_paper_plan(paper):
    assert {a.name: (a.recipe, a.levels, a.rewind_steps, a.seeds, a.models_at_once) for a in paper.archs.values()} == {
        "resnet20": ("resnet20-cifar10", 20, [0, 1000], [0, 1, 2, 3], 8),
        "vgg16": ("vgg16-cifar10", 20, [0, 1000], [0, 1, 2, 3], 8),
        "resnet18": ("resnet18-cifar100", 20, [0, 1000], [0, 1, 2, 3], 8),
        "resnet50": ("resnet50-imagenet", 18, [0, 6255], [0, 1, 2, 3], 1),
    }
    assert all(paper.granularity(exp) == "level" for exp in ALL_EXPERIMENTS)
    resnet50 = paper.archs["resnet50"]
    assert paper.experiment_levels(resnet50, "landscape") == [2, 6, 10, 14] and paper.runs(resnet50, "landscape") == []
    assert paper.experiment_levels(resnet50, "hessian") == list(range(19))
    # per-job results: the analysis jobs of `snakemake -n --configfile config/paper.yaml`
    jobs = {exp: sum(len(paper.per_job_results(a, exp)) for a in paper.archs.values()) for exp in ALL_EXPERIMENTS}
    assert jobs == {
        "imp": 32,
        "interpolation": 656,
        "perturbation": 504,
        "hessian": 656,
        "pruning_theory": 656,
        "pruning_ratio": 168,
        "flatness": 656,
        "small_weights": 656,
        "landscape": 96,
    }
    assert paper.per_job_results(resnet50, "hessian")[-1] == (
        "results/paper/resnet50/rewind_6255/seed_3/hessian/level_18.nc",
        6255,
    )
    assert len(paper.result_targets()) == 33  # 4 x (imp + 5 analyses) + 3 CIFAR nets x (E3, E6, E9)
    figures = [t for t in paper.figure_targets() if t.endswith(".pdf")]
    per_figure = {f: sum(t.endswith(f"/{f}.pdf") for t in figures) for f in FIGURES}
    assert per_figure == {
        "fig1_landscape": 3,
        "fig2_imp_connectivity": 4,
        "fig3_interpolation": 4,
        "fig4_robustness": 3,
        "fig5_hessian": 4,
        "fig6_pruning_ratio": 4,
        "fig7_flat_directions": 4,
        "fig8_small_weights": 4,
    }
    assert len(figures) == 44 and len(paper.figure_targets()) == 2 * 44 + 3


def test_paper_data_check_names_each_missing_data_set(paper, tmp_path, monkeypatch):
    monkeypatch.setenv("UNMASKING_DATA", str(tmp_path))
    messages = paper.data_missing()
    assert [m.split(":")[0] for m in messages] == [f"architectures[{a}].data_root" for a in paper.archs]
    assert messages[0].startswith(f"architectures[resnet20].data_root: cifar10 not found: looked for {tmp_path}")
    assert messages[0].endswith(
        "In this workflow, set architectures[resnet20].data_root (or $UNMASKING_DATA) to that folder."
    )
    assert "ImageNet not found" in messages[3]


def test_tiny_config_plan(tiny):
    cnn = tiny.archs["cnn"]
    assert tiny.experiment_levels(cnn, "landscape") == [0, 1]  # E9 needs level L+1: `all` would end at 1
    assert tiny.per_job_results(cnn, "pruning_ratio") == [
        ("results/test/cnn/rewind_5/seed_0/pruning_ratio/level_01.nc", 5)
    ]
    assert tiny.result_targets() == [f"results/test/cnn/{exp}.nc" for exp in ALL_EXPERIMENTS]
    assert len(tiny.figure_targets()) == 2 * 12 + 3


# --- checks across keys -------------------------------------------------------------------------------------

CNN = config_file("test")["architectures"][0]
CROSS_KEY = {
    "level_past_the_last": (
        {"experiments": {"landscape": {"levels": [2]}}},
        "experiments.landscape.levels: [2] goes past level 1, the last level landscape can run at for architecture "
        "'cnn' (levels: 2); use levels 0 ... 1 or `all`",
    ),
    "seeds_not_of_the_architecture": (
        {"experiments": {"perturbation": {"seeds": [5]}}},
        "experiments.perturbation.seeds: [5] not among the seeds of architecture 'cnn' ([0, 1]); use some of "
        "those, or list the experiment's architectures in experiments.perturbation.architectures",
    ),
    "unknown_architecture": (
        {"experiments": {"perturbation": {"architectures": ["cnn", "vgg"]}}},
        "experiments.perturbation.architectures: no architecture named vgg; the config has cnn",
    ),
    "pruning_theory_without_hessian": (
        {"experiments": {"hessian": {"enabled": False}}},
        "experiments.pruning_theory needs experiments.hessian (it reads the Hessian spectrum): enable hessian or set "
        "pruning_theory.enabled: false",
    ),
    "flatness_per_run_hessian_per_level": (
        {"experiments": {"hessian": {"granularity": "level"}}},
        "experiments.flatness.granularity: E7 reads E4's output, which comes per level "
        "(experiments.hessian.granularity level); set experiments.flatness.granularity: level, or "
        "experiments.flatness.use_hessian: false",
    ),
    "flatness_where_hessian_does_not_run": (
        {"experiments": {"hessian": {"levels": [0, 1]}}},
        "experiments.flatness.use_hessian: E7 runs where E4 does not (architecture 'cnn', rewind step 5, seed 0, "
        "level 2); widen experiments.hessian (levels, seeds, architectures) or set "
        "experiments.flatness.use_hessian: false",
    ),
    "duplicate_architecture_names": (
        {"architectures": [CNN, CNN]},
        "architectures: the name 'cnn' appears twice; names must be unique",
    ),
    "levels_in_set": (
        {"architectures": [{**CNN, "set": {"prune.levels": 3}}]},
        "architectures[cnn].set: prune.levels is set by architectures[cnn].levels; move it there",
    ),
    "unknown_recipe_key": (
        {"architectures": [{**CNN, "set": {"train.stpes": 5}}]},
        "architectures[cnn].set: unknown config key 'train.stpes'. Did you mean 'train.steps'?",
    ),
    "unknown_recipe": (
        {"architectures": [{**CNN, "recipe": "no-such"}]},
        "architectures[cnn].recipe: unknown recipe 'no-such'",
    ),
}


@pytest.mark.parametrize("case", sorted(CROSS_KEY))
def test_cross_key_errors(case):
    changes, message = CROSS_KEY[case]
    with pytest.raises(PlanError) as error:
        planned(overlay(config_file("test"), **changes))
    assert str(error.value).startswith(message)


def test_every_recipe_problem_is_listed_at_once():
    """Two bad `set` keys, an unknown model and a second architecture's unknown recipe: one line each, all in
    one error, before any job (an unknown model used to pass and fail inside the jobs)."""
    bad_keys = {**CNN, "set": {"train.stpes": 5, "train.lr": "fast"}}
    bad_model = {**CNN, "name": "other", "set": {"model.name": "resnet1000"}}
    bad_recipe = {**CNN, "name": "third", "recipe": "no-such"}
    with pytest.raises(PlanError) as error:
        planned(overlay(config_file("test"), architectures=[bad_keys, bad_model, bad_recipe]))
    lines = str(error.value).splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("architectures[cnn].set: unknown config key 'train.stpes'. Did you mean 'train.steps'?")
    assert lines[1].startswith("architectures[cnn].set: ") and "train.lr" in lines[1]
    assert lines[2].startswith("architectures[other].set: unknown model 'resnet1000'; choose one of: mlp, cnn1d")
    assert lines[3].startswith("architectures[third].recipe: unknown recipe 'no-such'")


def test_flatness_without_hessian_needs_no_hessian_runs():
    """use_hessian false (or E4 off with E5 off): E7 estimates tr(H) itself and may run where E4 does not."""
    plan = planned(
        overlay(config_file("test"), experiments={"hessian": {"levels": [0]}, "flatness": {"use_hessian": False}})
    )
    assert not plan.reads_hessian("flatness") and plan.reads_hessian("pruning_theory")
    plan = planned(
        overlay(config_file("test"), experiments={"hessian": {"enabled": False}, "pruning_theory": {"enabled": False}})
    )
    assert not plan.reads_hessian("flatness") and not plan.available(plan.archs["cnn"], "pruning_theory")


# --- read from the registry ---------------------------------------------------------------------------------


def test_priorities_and_retraining_come_from_the_registry():
    """The scheduling and the retraining flags the rules read (formerly PRIORITY and RETRAINING in common.smk)."""
    assert {name: e.priority for name, e in EXPERIMENTS.items() if e.priority} == {
        "imp": 100,
        "perturbation": 60,
        "pruning_ratio": 50,
        "hessian": 50,
        "landscape": 20,
    }
    assert [name for name, e in EXPERIMENTS.items() if e.retrains] == ["perturbation", "pruning_ratio"]
    assert [name for name, e in EXPERIMENTS.items() if e.needs_next_level] == ["landscape"]


def test_needs_next_level_and_shared_section(tiny):
    cnn = tiny.archs["cnn"]
    assert {exp: tiny.last_level(cnn, exp) for exp in ANALYSES} == {
        exp: 1 if exp == "landscape" else 2 for exp in ANALYSES
    }
    plan = planned(
        overlay(
            config_file("test"),
            experiments={
                "hessian": {"seeds": [1], "levels": [0, 2], "granularity": "level"},
                "flatness": {"use_hessian": False},
                "pruning_theory": {"enabled": False},
            },
        )
    )
    cnn = plan.archs["cnn"]
    assert plan.runs(cnn, "pruning_theory") == [(5, 1)] and plan.experiment_levels(cnn, "pruning_theory") == [0, 2]
    assert plan.granularity("pruning_theory") == "level" and not plan.enabled("pruning_theory")
    assert plan.result_targets() == [f"results/test/cnn/{exp}.nc" for exp in ALL_EXPERIMENTS if exp != "pruning_theory"]


def test_figure_variants_follow_the_registry_and_the_config(tiny):
    assert tiny.figure_splits("fig1_landscape") == ["test"]
    assert {f for f in FIGURES if tiny.figure_splits(f) == ["test", "train"]} == {
        f.id for f in FIGURES.values() if f.train_variant
    }
    plan = planned(overlay(config_file("test"), experiments={"landscape": {"splits": ["test", "train"]}}))
    assert plan.figure_splits("fig1_landscape") == ["test", "train"]
    assert "figures/test/cnn/fig1_landscape_train.png" in plan.figure_targets()
    # Fig. 6 from E5 alone: the test-error figure only (E5 has no errors to draw a train variant from)
    plan = planned(overlay(config_file("test"), experiments={"pruning_ratio": {"enabled": False}}))
    cnn = plan.archs["cnn"]
    assert plan.figure_made(cnn, "fig6_pruning_ratio") and not plan.figure_made(cnn, "fig6_pruning_ratio", "train")
    # neither E5 nor E6: no Fig. 6; no E2: no Fig. 2 and 3
    plan = planned(
        overlay(
            config_file("test"),
            experiments={e: {"enabled": False} for e in ("pruning_ratio", "pruning_theory", "interpolation")},
        )
    )
    made = {f for f in FIGURES if plan.figure_made(plan.archs["cnn"], f)}
    assert made == set(FIGURES) - {"fig2_imp_connectivity", "fig3_interpolation", "fig6_pruning_ratio"}


def test_schema_experiments_are_the_registry_analyses():
    schema = yaml.safe_load((REPO / SCHEMA).read_text())
    sections = schema["properties"]["experiments"]["properties"]
    assert tuple(sections) == ANALYSES
    for name, section in sections.items():
        assert f"`unmasking {name}`" in " ".join(section["description"].split()), name
        assert EXPERIMENTS[name].id in section["description"], name
    assert set(ANALYSES) <= set(schema["$defs"]["rule_resources"]["properties"])


# --- report and imports -------------------------------------------------------------------------------------


def test_verdict_texts():
    report = {
        "claims": [
            {"arch": "cnn", "claim": 1, "rewind_step": 40, "verdict": "holds", "reason": "r"},
            {"arch": "cnn", "claim": 1, "rewind_step": 0, "verdict": "inconclusive", "reason": "q"},
        ]
    }
    assert verdict_text(report, "cnn", 1) == "rewind step 40: holds (r); rewind step 0: inconclusive (q)"
    assert verdict_text(report, "cnn", 1, reasons=False) == "rewind step 40: holds; rewind step 0: inconclusive"
    assert verdict_text(report, "mlp", 1) == "not evaluated for this architecture"
    # the captions' texts are reStructuredText (tests/test_report.py renders them)
    assert report_verdicts(None, ["cnn"]) == {
        "cnn": {str(n): r"not evaluated yet \(the claims rule has not run\)" for n in (1, 2, 3, 4)}
    }
    assert report_verdicts(report, ["cnn"])["cnn"]["1"] == rst_escape(verdict_text(report, "cnn", 1))


def test_import_needs_neither_torch_nor_snakemake():
    code = (
        "import sys, unmasking.workflow; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'snakemake', 'jsonschema'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the smoke of a config (unmasking.workflow.smoke) -------------------------------------------------------


def smoke_of(name: str) -> tuple[dict, Plan]:
    """config/<name>.yaml with config/smoke.yaml layered over it (as `--configfile A B`), shrunk and planned."""
    from snakemake.utils import update_config

    from unmasking.workflow import shrink

    config = config_file(name)
    update_config(config, config_file("smoke"))
    check_config(config, SCHEMA, REPO)
    validate(config, str(REPO / SCHEMA))
    shrunk = shrink(config)
    return shrunk, Plan(shrunk)


def test_scaling_rules():
    from unmasking.workflow.smoke import map_levels, scale_interval, scale_step

    factor = 4 / 62_400
    assert [scale_step(t, factor, 4) for t in (0, 1, 1000, 31_200, 46_800, 62_399)] == [0, 1, 1, 2, 3, 3]
    assert [scale_interval(e, factor, 4) for e in (0, 1, 3_900, 62_400)] == [0, 2, 2, 4]
    assert (scale_interval(1, factor, 3), scale_interval(1, factor, 5)) == (2, 3)  # at most two per training
    assert map_levels([1], 2, 1, 1) == [1]  # half up: the only pruned level stays a pruned level
    assert map_levels([0, 4, 8, 10, 12, 14, 16], 20, 1, 1) == [0, 1]
    assert map_levels([2, 6, 10, 14], 20, 2, 1) == [0, 1]
    assert map_levels([0, 4, 8, 10, 12, 14, 16], 20, 2, 2) == [0, 1, 2]
    assert map_levels("all", 20, 1, 1) == "all" and map_levels("none", 20, 1, 1) == "none"


def test_the_paper_smoke_keeps_the_structure_and_shrinks_the_sizes(paper):
    config, smoke = smoke_of("paper")
    assert config["name"] == "paper-smoke" and config["smoke"] is None and config["seeds"] == [0, 1]
    assert config["granularity"] == "level" and config["thresholds"] == paper.config["thresholds"]
    assert [(a.name, a.recipe, a.models_at_once, a.compile) for a in smoke.archs.values()] == [
        (a.name, a.recipe, a.models_at_once, a.compile) for a in paper.archs.values()
    ]
    assert {a.name: (a.levels, a.rewind_steps, a.seeds) for a in smoke.archs.values()} == {
        name: (1, [0, 1], [0, 1]) for name in ("resnet20", "vgg16", "resnet18", "resnet50")
    }
    sets = {a.name: a.overrides for a in smoke.archs.values()}
    # ResNet-50: 112,590 steps (90 epochs of 1,251), milestones at 30, 60, 80 epochs, 5 warmup epochs.
    assert sets["resnet50"] == {
        "train.steps": 2,
        "train.milestones": [1],
        "train.warmup_steps": 1,
        "train.eval_every": 1,
        "train.checkpoint_every": 1,
        "train.batch_size": 2,
        "data.train_eval_size": 4,
        "data.workers": 1,
        "data.image_size": 64,
    }
    assert sets["resnet20"]["train.milestones"] == [1] and sets["resnet20"]["train.warmup_steps"] == 0
    for exp in ("imp", *ANALYSES):  # every experiment on the same architectures, every figure the same
        assert [a.name for a in smoke.archs.values() if smoke.available(a, exp)] == [
            a.name for a in paper.archs.values() if paper.available(a, exp)
        ], exp
    assert smoke.figure_targets() == [t.replace("paper", "paper-smoke") for t in paper.figure_targets()]
    assert smoke.section("interpolation")["bn_modes"] == ["interpolate", "reset"]
    assert smoke.section("pruning_ratio")["methods"] == ["magnitude", "random", "random_layerwise"]
    assert smoke.section("pruning_ratio")["levels"] == [0, 1] and smoke.section("landscape")["levels"] == [0]
    assert smoke.section("hessian")["levels"] == "all" and smoke.section("hessian")["subset_size"] == 2
    assert config["resources"]["train_level"] == {"gpu": 1, "threads": 1, "mem_mb": 6000, "runtime": 20}
    assert config["architectures"][3]["resources"]["default"] == {"threads": 1, "mem_mb": 6000}
    from unmasking.workflow import shrink

    assert shrink(config) == config  # applied once: the result has no smoke section left


def test_the_smoke_of_the_embedded_default_is_its_structure_at_smoke_size(embedded):
    config, smoke = smoke_of("config")
    assert config["name"] == "embedded-smoke"
    assert [a.name for a in smoke.archs.values()] == [a.name for a in embedded.archs.values()]
    assert smoke.figure_targets() == [t.replace("embedded", "embedded-smoke") for t in embedded.figure_targets()]


def test_a_smoke_section_must_state_every_size():
    config = config_file("paper")
    config["smoke"] = {"seeds": 2}
    message = schema_message(config)
    assert "smoke: 'levels' is a required property" in message


def test_planning_imports_no_torch(tmp_path):
    """Snakemake plans every run (and every job on a cluster parses the workflow again): the plan of the paper
    config, its smoke and its data check import no torch, which costs seconds per process."""
    code = (
        "import sys, copy, yaml; from pathlib import Path; from snakemake.utils import validate, update_config\n"
        "from unmasking.workflow import Plan, check_config, shrink\n"
        f"repo = Path({str(REPO)!r}); schema = str(repo / {SCHEMA!r})\n"
        "config = yaml.safe_load((repo / 'config/paper.yaml').read_text())\n"
        "update_config(config, yaml.safe_load((repo / 'config/smoke.yaml').read_text()))\n"
        "check_config(config, schema); validate(config, schema); plan = Plan(shrink(config))\n"
        "print(len(plan.data_missing()), 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"UNMASKING_DATA": str(tmp_path)}
    )
    assert out.stdout.split() == ["4", "False"], out.stderr[-2000:]


def shrunk_test_config(tmp_path, **changes) -> tuple[dict, Plan]:
    """config/test.yaml with `changes` and config/smoke.yaml's smoke section, shrunk and planned."""
    from unmasking.workflow import shrink

    config = overlay(config_file("test"), **changes)
    config["smoke"] = config_file("smoke")["smoke"]
    check_config(config, SCHEMA, REPO)
    validate(config, str(REPO / SCHEMA))
    shrunk = shrink(config)
    return shrunk, Plan(shrunk)


def test_the_smoke_never_grows_and_caps_the_fallback_resources(tmp_path):
    config, plan = shrunk_test_config(tmp_path)
    assert config["resources"]["default"] == {"threads": 1, "mem_mb": 2000, "runtime": 20}  # test.yaml sets none
    (cnn,) = plan.archs.values()
    assert cnn.levels == 1 and cnn.overrides["train.steps"] == 2
    big = config_file("smoke")["smoke"] | {"levels": 5, "steps": 500, "seeds": 3}
    from unmasking.workflow import shrink

    raw = copy.deepcopy(config_file("test"))
    raw["smoke"] = big
    validate(raw, str(REPO / SCHEMA))
    grown = shrink(raw)
    assert grown["architectures"][0]["levels"] == 2 and grown["architectures"][0]["set"]["train.steps"] == 60
    assert grown["seeds"] == [0, 1]


def test_the_smoke_keeps_an_experiment_on_seeds_its_architectures_kept(tmp_path):
    arch = {**config_file("test")["architectures"][0], "seeds": [7, 9, 11]}
    config, plan = shrunk_test_config(
        tmp_path, architectures=[arch], experiments={"perturbation": {"seeds": [11]}, "pruning_ratio": {"seeds": [9]}}
    )
    assert plan.archs["cnn"].seeds == [7, 9]
    assert plan.section("perturbation")["seeds"] == [7] and plan.section("pruning_ratio")["seeds"] == [9]
