"""The Snakemake workflow: dry runs of the shipped configs, an end-to-end run of the tiny config
(results, no-op rerun, interruption and resume, per-level granularity, the HTML report in a headless
browser) and bad configs.

Each test copies Snakefile, workflow/ and config/ into a temporary directory and runs the
``snakemake`` of this Python environment there with the local profile and 2 cores.
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from workflow_helpers import (  # noqa: F401
    BIN,
    EXPERIMENTS,
    REPO,
    TARGETS,
    TEST_CONFIG,
    assert_same_numbers,
    copy_workflow,
    job_counts,
    load,
    ok,
    snakemake,
    snakemake_cmd,
    write_yaml,
)

from unmasking.foundations.netcdf import load_dataset
from unmasking.foundations.registry import FIGURES
from unmasking.workflow.report import verdict_text

# --- dry runs ------------------------------------------------------------------------------------------------


def test_dry_run_embedded_default(tmp_path, data_env):
    """The embedded default plans one IMP job per (arch, seed) and one job per analysis and run, or
    per run and level where an experiment asks for per-level jobs."""
    work = copy_workflow(tmp_path)
    counts = job_counts(ok(snakemake(work, "-n", env=data_env)))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    archs = config["architectures"]
    assert counts["imp"] == sum(len(a["rewind_steps"]) * len(config["seeds"]) for a in archs)
    exps = config["experiments"]
    aggregates = len(archs)  # imp
    for exp in EXPERIMENTS:
        section = exps["hessian" if exp == "pruning_theory" else exp]
        names = section.get("architectures") or [a["name"] for a in archs]
        aggregates += len(names)
        runs = sum(
            len(a["rewind_steps"]) * len(section.get("seeds") or config["seeds"]) for a in archs if a["name"] in names
        )
        levels = section["levels"]
        per_level = section.get("granularity", config["granularity"]) == "level"
        expected = runs * (len(levels) if per_level else 1)
        assert levels != "all" or not per_level, "count levels of `all` per architecture"
        assert counts[exp] == expected, exp
    assert counts["aggregate"] == aggregates
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_dry_run_commands_carry_the_architectures_training_options(tmp_path, data_env):
    """`compile` and `models_at_once` of an architecture reach its IMP, E3 and E6 commands only."""
    out = ok(snakemake(copy_workflow(tmp_path), "-n", "--printshellcmds", env=data_env))
    commands = [line for line in out.splitlines() if "unmasking " in line and " --run results/" in line]
    config = {a["name"]: a for a in yaml.safe_load((REPO / "config" / "config.yaml").read_text())["architectures"]}

    def lines(arch: str, command: str) -> list[str]:
        return [c for c in commands if f" {command} --run results/embedded/{arch}/" in c]

    assert all(lines("cnn", c) for c in ("imp", "perturbation", "pruning_ratio", "hessian"))

    for arch, entry in config.items():
        for command in ("imp", "perturbation", "pruning_ratio"):
            assert all(("--compile" in c) == entry.get("compile", False) for c in lines(arch, command)), command
        for command in ("perturbation", "pruning_ratio"):
            assert all(f"--models-at-once {entry.get('models_at_once', 1)} " in c for c in lines(arch, command))
        assert not any("--compile" in c or "--models-at-once" in c for c in lines(arch, "hessian"))


def test_a_config_file_replaces_the_embedded_default(tmp_path, data_env):
    """`--configfile` is not layered over config/config.yaml: keys it leaves out take the schema's
    defaults, not the embedded default's values (whose level lists would not even fit here)."""
    work = copy_workflow(tmp_path)
    bare = {k: v for k, v in TEST_CONFIG.items() if k != "experiments"}
    counts = job_counts(
        ok(snakemake(work, "-n", "--configfile", write_yaml(tmp_path / "bare.yaml", bare), env=data_env))
    )
    runs = len(bare["seeds"])  # every experiment on every seed, one job per run (schema defaults)
    for exp in EXPERIMENTS:
        assert counts[exp] == runs, exp
    assert counts["imp"] == runs


def test_dry_run_paper_lists_all_jobs_without_data(tmp_path):
    """config/paper.yaml: per-level jobs for 4 architectures x 2 rewind steps x 4 seeds; the data
    are absent here, which a dry run reports as a warning and proceeds."""
    work = copy_workflow(tmp_path / "work")
    (tmp_path / "empty").mkdir()
    out = ok(
        snakemake(work, "-n", "--configfile", "config/paper.yaml", env={"UNMASKING_DATA": str(tmp_path / "empty")})
    )
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    archs = paper["architectures"]
    runs = {a["name"]: len(a["rewind_steps"]) * len(paper["seeds"]) for a in archs}
    levels = {a["name"]: a["levels"] for a in archs}
    counts = job_counts(out)
    assert counts["pretrain"] == counts["summarize"] == sum(runs.values()) == 32
    assert counts["train_level"] == sum(runs[a] * (levels[a] + 1) for a in runs)
    assert counts["prune"] == sum(runs[a] * levels[a] for a in runs)
    assert counts["hessian"] == counts["pruning_theory"] == counts["flatness"] == counts["train_level"]
    cifar = paper["experiments"]["pruning_ratio"]["architectures"]
    assert counts["pruning_ratio"] == sum(runs[a] for a in cifar) * len(paper["experiments"]["pruning_ratio"]["levels"])
    assert "data check: architectures[resnet20].data_root: cifar10 not found" in out
    assert "data check: architectures[resnet50].data_root: ImageNet not found" in out


def test_lint_and_format():
    lint = subprocess.run(
        [str(BIN / "snakemake"), "--lint", "--workflow-profile", "none", "--configfile", "config/test.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr, lint.stdout
    fmt = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"], cwd=REPO, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


# --- bad configurations: stopped before any job ---------------------------------------------------------------

BAD = {
    "unknown_key": (
        {"experiments": {"perturbation": {"strenghts": [1]}}},
        "unknown key experiments.perturbation.strenghts",
    ),
    "wrong_type": (
        {"architectures": [{"name": "cnn", "recipe": "mnist1d-cnn", "levels": "three"}]},
        "architectures[cnn].levels: 'three' is not of type 'integer'",
    ),
    "unknown_recipe_key": (
        {"architectures": [{"name": "cnn", "recipe": "mnist1d-cnn", "set": {"train.stpes": 5}}]},
        "architectures[cnn].set: unknown config key 'train.stpes'. Did you mean 'train.steps'?",
    ),
    "missing_cifar": (
        {
            "architectures": [
                {"name": "r20", "recipe": "resnet20-cifar10", "levels": 2, "data_root": "{tmp}/no-cifar-here"}
            ],
            "experiments": {e: {"levels": "all"} for e in EXPERIMENTS if e != "pruning_theory"},
        },
        "architectures[r20].data_root: cifar10 not found: looked for {tmp}/no-cifar-here/cifar-10-batches-py",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_stops_before_any_job(tmp_path, case):
    config, message = BAD[case]
    config = yaml.safe_load(yaml.safe_dump(config).replace("{tmp}", str(tmp_path)))
    work = copy_workflow(tmp_path / "work")
    result = snakemake(work, "--configfile", "config/test.yaml", write_yaml(tmp_path / "bad.yaml", config))
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert message.replace("{tmp}", str(tmp_path)) in out, out[-3000:]
    assert "Finished jobid" not in out and not (work / "results").exists()


# --- end to end -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_results(finished):
    results = finished / "results" / "test" / "cnn"
    arch = TEST_CONFIG["architectures"][0]
    seeds, levels = TEST_CONFIG["seeds"], list(range(arch["levels"] + 1))
    imp = load(results / "imp.nc")
    assert list(imp.arch.values) == ["cnn"] and list(imp.rewind_step.values) == arch["rewind_steps"]
    assert list(imp.seed.values) == seeds and list(imp.level.values) == levels
    # density: ceil(20%) of the surviving weights pruned per level, i.e. 0.8^L up to rounding
    remaining = imp.remaining.isel(arch=0, rewind_step=0).values
    for s in range(len(seeds)):
        expected = [remaining[s, 0]]
        for _ in levels[1:]:
            expected.append(expected[-1] - math.ceil(0.2 * expected[-1]))
        np.testing.assert_array_equal(remaining[s], expected)
    density = imp.density.isel(arch=0, rewind_step=0).values
    np.testing.assert_array_equal(density, remaining / remaining[:, :1])
    np.testing.assert_allclose(
        density, np.broadcast_to(0.8 ** np.array(levels), density.shape), atol=len(levels) / remaining[0, 0]
    )
    assert np.isfinite(imp.test_error).all() and ((imp.test_error >= 0) & (imp.test_error <= 1)).all()
    # the aggregate holds each run's own numbers
    for s in seeds:
        run = load(finished / f"results/test/cnn/rewind_{arch['rewind_steps'][0]}/seed_{s}/imp.nc")
        np.testing.assert_array_equal(
            imp.test_error.sel(arch="cnn", rewind_step=arch["rewind_steps"][0], seed=s), run.test_error.sel(seed=s)
        )
    for exp in EXPERIMENTS:
        ds = load(results / f"{exp}.nc")
        section = TEST_CONFIG["experiments"]["hessian" if exp == "pruning_theory" else exp]
        exp_levels = levels if section.get("levels", "all") == "all" else section["levels"]
        assert list(ds.arch.values) == ["cnn"], exp
        assert list(ds.rewind_step.values) == arch["rewind_steps"], exp
        assert list(ds.seed.values) == (section.get("seeds") or seeds), exp
        assert list(ds.level.values) == exp_levels, exp
        assert ds.attrs["experiment_name"] == exp and ds.attrs["workflow_config"] == "test"
    interp = load(results / "interpolation.nc")
    assert interp.sizes["gamma"] == TEST_CONFIG["experiments"]["interpolation"]["gammas"]
    perturb = load(results / "perturbation.nc")
    assert list(perturb.strength.values) == TEST_CONFIG["experiments"]["perturbation"]["strengths"]


@pytest.mark.slow
def test_rerun_after_a_full_run_does_nothing(finished, data_env, tmp_path):
    out = ok(snakemake(finished, "-n", "--configfile", "config/test.yaml", *TARGETS, env=data_env))
    assert "Nothing to be done" in out, out[-3000:]
    # a changed experiment option reruns that experiment (params trigger) and its aggregate only
    overlay = write_yaml(tmp_path / "gammas.yaml", {"experiments": {"interpolation": {"gammas": 3}}})
    counts = job_counts(
        ok(snakemake(finished, "-n", "--configfile", "config/test.yaml", overlay, *TARGETS, env=data_env))
    )
    assert counts == {"interpolation": 2, "aggregate": 1, "total": 3}
    # a changed recipe reruns the IMP runs (whose first job starts the run folder over) and everything after
    arch = {**TEST_CONFIG["architectures"][0]}
    arch["set"] = {**arch["set"], "train.lr": 0.05}
    overlay = write_yaml(tmp_path / "lr.yaml", {"architectures": [arch]})
    counts = job_counts(
        ok(snakemake(finished, "-n", "--configfile", "config/test.yaml", overlay, *TARGETS, env=data_env))
    )
    assert counts["imp"] == 2 and counts["aggregate"] == len(TARGETS)


def test_fresh_run_keeps_restarts_or_refuses_a_run_folder(tmp_path):
    """A run's first job keeps a folder of the same recipe, seed and training mode (it resumes), removes
    one of another recipe or mode or without a recorded mode (the config changed: the run starts over),
    and refuses one of another seed in one line, keeping it (a moved folder; it may hold hours of work)."""
    script = REPO / "workflow" / "scripts" / "fresh_run.py"
    run = tmp_path / "run"

    def prepare(info: dict) -> None:
        run.mkdir(exist_ok=True)
        (run / "run.json").write_text(json.dumps(info))
        (run / "rewind.pt").write_text("w_t")

    def fresh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(run), *args], capture_output=True, text=True)

    eager = {"recipe_hash": "abc", "seed": 1, "mode": {"compile": False, "precision": "float32", "device": "cpu"}}
    compiled = {**eager, "mode": {**eager["mode"], "compile": True}}
    for info, args, kept in [
        (eager, ["abc", "1"], True),
        (compiled, ["abc", "1", "--compile"], True),
        (eager, ["abd", "1"], False),  # another recipe
        (eager, ["abc", "1", "--compile"], False),  # another training mode
        (compiled, ["abc", "1"], False),
        ({"recipe_hash": "abc", "seed": 1}, ["abc", "1"], False),  # made before modes were recorded
    ]:
        prepare(info)
        result = fresh(*args)
        assert result.returncode == 0 and run.exists() == kept, (info, args, result.stderr)
        assert kept or result.stderr.startswith(f"removing {run}: it holds recipe abc")
    prepare(eager)
    result = fresh("abc", "2")
    assert result.returncode == 2 and (run / "rewind.pt").exists()
    assert result.stderr.strip().count("\n") == 0
    assert f"{run} holds the run of seed 1 (its run.json) where the config expects seed 2" in result.stderr
    shutil.rmtree(run)
    assert fresh("abc", "1").returncode == 0  # no folder: nothing to do


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_numbers(finished, data_env, tmp_path):
    """SIGINT while IMP trains; the rerun resumes (finished levels kept, the level in progress from its
    checkpoint) and ends with the numbers of the uninterrupted run, for IMP and the analyses that train."""
    work = copy_workflow(tmp_path / "work")
    targets = [f"results/test/cnn/{exp}.nc" for exp in ("imp", "perturbation", "pruning_ratio")]
    proc = subprocess.Popen(
        snakemake_cmd("--configfile", "config/test.yaml", *targets),
        cwd=work,
        env={**os.environ, **data_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    runs = work / "results" / "test" / "cnn" / "rewind_5"
    deadline = time.monotonic() + 300
    while not list(runs.glob("seed_*/run/level_01/final.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Snakemake stops its running jobs at once (SIGTERM would let them finish)
    assert proc.wait(timeout=120) != 0
    ok(snakemake(work, "--configfile", "config/test.yaml", *targets, env=data_env))
    for exp in ("imp", "perturbation", "pruning_ratio"):
        assert_same_numbers(load(work / f"results/test/cnn/{exp}.nc"), load(finished / f"results/test/cnn/{exp}.nc"))


@pytest.mark.slow
def test_level_granularity_gives_the_same_numbers(finished, data_env, tmp_path):
    """Chained pretrain/train-level/prune jobs and per-level analysis jobs reproduce the per-run jobs
    (seed 0, IMP and E2)."""
    work = copy_workflow(tmp_path / "work")
    overlay = {
        "granularity": "level",
        "seeds": [0],
        "experiments": {e: {"enabled": e == "interpolation"} for e in EXPERIMENTS},
    }
    out = ok(
        snakemake(
            work,
            "--configfile",
            "config/test.yaml",
            write_yaml(tmp_path / "level.yaml", overlay),
            "results/test/cnn/imp.nc",
            "results/test/cnn/interpolation.nc",
            env=data_env,
        )
    )
    assert "rule train_level" in out and "rule prune" in out
    for exp in ["imp", "interpolation"]:
        assert_same_numbers(
            load(work / f"results/test/cnn/{exp}.nc"), load(finished / f"results/test/cnn/{exp}.nc").sel(seed=[0])
        )
    assert (work / "results/test/cnn/rewind_5/seed_0/interpolation/level_02.nc").exists()


# --- the report in a browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, run headless: the test is skipped where it is missing, and fails in CI. (Asked
    for before `finished`, so that a skip does not wait for the run.)"""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed: CI renders the report in it (.ci/run installs Debian's chromium)")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")


def browse(browser: str, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Load ``page`` in headless chromium and let its scripts run (virtual time, so the wait is short)."""
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # root in a container (CI) has no sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1600,1000",
            "--virtual-time-budget=30000",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def driven_report(report: Path, final: str) -> Path:
    """A copy of the report with tests/report_driver.js, which opens every result and ends on ``final``."""
    driver = (REPO / "tests" / "report_driver.js").read_text().replace("__FINAL__", json.dumps(final))
    page = report.with_name(f"driven_{Path(final).stem}.html")
    text = report.read_text()
    end = text.rindex("</body>")
    page.write_text(f"{text[:end]}<script>\n{driver}\n</script>\n{text[end:]}")
    return page


def one_line(text: str) -> str:
    return " ".join(text.split())


DOCUTILS_ERRORS = ("System Message", "system-message", "problematic", "Undefined substitution", "ERROR/", "WARNING/")


def assert_no_docutils_message(text: str, where: str) -> None:
    for message in DOCUTILS_ERRORS:
        at = text.find(message)
        assert at < 0, f"{where} shows a docutils message: …{text[max(at - 300, 0) : at + 300]}…"


@pytest.mark.slow
def test_report_renders_in_a_browser(chromium, finished, data_env, tmp_path):
    """`snakemake --report` after the run of config/test.yaml, opened in headless chromium: every figure
    and the claims table are in it, every caption renders without a docutils message (the verdicts'
    reasons carry |Δ| and the like), and screenshots of a figure and of the claims table are not blank."""
    browser = chromium
    # In the finished run's folder (a copy would rerun every job: the jobs' params hold the workflow's
    # path); figures, claims and report are added beside its results, which the other tests read.
    work = finished
    out = ok(snakemake(work, "--configfile", "config/test.yaml", env=data_env))
    ran = set(re.findall(r"^(?:local)?rule (\w+):", out, re.M))
    assert ran <= {*FIGURES, *(f"{f}_train" for f in FIGURES), "claims", "all"}, ran  # the fixture made them
    # Decide every claim the tiny run can (one level is enough), so that the captions show the verdicts'
    # reasons (claim 3's reason holds |Δ|, which docutils read as a substitution before rst_escape).
    claims = work / "figures" / "test"
    subprocess.run(
        [
            str(BIN / "unmasking"),
            "claims",
            "--inputs",
            *sorted(str(p.relative_to(work)) for p in (work / "results/test/cnn").glob("*.nc")),
            "--out-json",
            str(claims / "claims.json"),
            "--out-md",
            str(claims / "claims.md"),
            "--out-html",
            str(claims / "claims.html"),
            "--config-name",
            "test",
            "--min-levels",
            "1",
        ],
        cwd=work,
        check=True,
        capture_output=True,
    )
    claims_report = json.loads((claims / "claims.json").read_text())
    assert any("|Δ|" in c["reason"] for c in claims_report["claims"])
    ok(snakemake(work, "--configfile", "config/test.yaml", "--report", "report.html", env=data_env))

    pngs = sorted(str(p.relative_to(work)) for p in claims.rglob("*.png"))
    assert {Path(p).stem.removesuffix("_train") for p in pngs} == set(FIGURES), pngs  # the tiny run draws them all
    figure_page = "figures/test/cnn/fig6_pruning_ratio.png"
    dom = browse(browser, driven_report(work / "report.html", figure_page), tmp_path, "--dump-dom")
    dumps = re.findall(r'<pre id="unmasking-test-dump"[^>]*>(.*?)</pre>', dom.stdout, re.S)
    assert dumps, f"the report's driver did not finish:\n{dom.stderr[-3000:]}"
    record = json.loads(html.unescape(dumps[-1]))
    assert_no_docutils_message(dom.stdout, "the report")

    # every figure of the run and the claims table are listed, each under its category
    assert sorted(record["results"]) == sorted([*pngs, "figures/test/claims.html"])
    menu = record["menu"].splitlines()
    assert "Claims" in menu and {f.title for f in FIGURES.values()} <= set(menu)
    for path, page in record["results"].items():
        assert page["caption_html"], path
        assert_no_docutils_message(page["page_text"], f"the page of {path}")
        assert_no_docutils_message(page["caption_html"], f"the caption of {path}")
        fig_id = Path(path).stem.removesuffix("_train")
        if fig_id in FIGURES:  # the caption shows the verdict as claims.json has it
            assert path in page["page_text"] and f"claim {FIGURES[fig_id].claim}" in page["page_text"]
            assert one_line(verdict_text(claims_report, "cnn", FIGURES[fig_id].claim)) in one_line(page["page_text"])
    assert "|Δ|" in record["results"][figure_page]["page_text"]
    assert record["final_image_width"] > 0  # the figure was decoded and shown
    table = record["claims_html"]
    assert "<table>" in table and table.count("<tr style=") == len(claims_report["claims"]) == 4
    assert all(c["verdict"] in table for c in claims_report["claims"])

    # screenshots (kept in tmp_path): a figure with its caption, and the claims table
    for final in (figure_page, "figures/test/claims.html"):
        shot = tmp_path / f"report_{Path(final).stem}.png"
        browse(browser, driven_report(work / "report.html", final), tmp_path, f"--screenshot={shot}")
        with Image.open(shot) as image:
            assert image.size == (1600, 1000)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 16, f"{shot}: blank ({colours})"
        print(f"screenshot: {shot}")


def test_aggregation_refuses_a_file_that_is_not_its_jobs_result(finished, tmp_path):
    """A valid netCDF of another experiment, seed or recipe in a per-run result's place used to be aggregated
    without a word; the aggregation now checks each file against what its path stands for."""
    spec = importlib.util.spec_from_file_location("aggregate_script", REPO / "workflow/scripts/aggregate.py")
    agg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agg)
    runs = finished / "results/test/cnn"
    imp0, imp1 = runs / "rewind_5/seed_0/imp.nc", runs / "rewind_5/seed_1/imp.nc"
    recipe_hash = load_dataset(imp0).attrs["config_hash"]
    good = agg.aggregate([str(imp0), str(imp1)], [5, 5], "cnn", "imp", "test", "E1_imp", [recipe_hash] * 2)
    assert list(good.seed.values) == [0, 1]

    def placed(src: Path, seed: int) -> str:  # src copied to where seed `seed`'s IMP result belongs
        dest = tmp_path / f"run{src.stat().st_ino}" / "cnn/rewind_5" / f"seed_{seed}" / "imp.nc"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        return str(dest)

    cases = {
        "experiment E4_hessian": placed(runs / "rewind_5/seed_0/hessian.nc", 0),  # another experiment
        "seeds [0]": placed(imp0, 1),  # another seed's result in seed 1's place
    }
    for held, path in cases.items():
        with pytest.raises(agg.IdentityError) as err:
            agg.aggregate([str(imp0), path], [5, 5], "cnn", "imp", "test", "E1_imp", [recipe_hash] * 2)
        message = str(err.value)
        assert message.startswith(f"{path} holds {held}") and "delete it and run snakemake again" in message
        assert "\n" not in message
    with pytest.raises(agg.IdentityError, match="recipe hash"):
        agg.aggregate([str(imp0)], [5], "cnn", "imp", "test", "E1_imp", ["0000000000000000"])
