"""Fault injection: a finished run of config/test.yaml (the session's `finished`), copied and tampered
with (swapped, truncated, garbage, relabelled, moved, stale and deleted files), and processes killed at
random moments of training and of the workflow.

Each case asserts one of two outcomes (docs/workflow.md lists the cases):
- a clean refusal: non-zero exit, the one-line message naming the file and the fix, no traceback, and
  nothing downstream rebuilt from the bad file (every aggregate, figure and claims file is either
  untouched or removed, never rewritten);
- or a result identical to the untouched run: every aggregate holds the same numbers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from workflow_helpers import BIN, assert_same_numbers, load, ok, snakemake, snakemake_cmd, write_yaml

from unmasking.foundations.netcdf import load_dataset, write_dataset

pytestmark = pytest.mark.slow

RESULTS = Path("results/test/cnn")
RUNS = RESULTS / "rewind_5"
CONFIG = ("--configfile", "config/test.yaml")


def copy_finished(finished: Path, dest: Path) -> Path:
    """A copy of the finished run (modification times kept, so Snakemake sees it as up to date)."""
    shutil.copytree(finished, dest, symlinks=True, ignore=shutil.ignore_patterns("report.html", "driven_*"))
    return dest


def downstream(work: Path) -> dict[Path, int]:
    """Modification times of what stands on the per-run results: aggregates, figures, claims."""
    files = list((work / RESULTS).glob("*.nc")) + list((work / "figures").rglob("*.*"))
    return {p: p.stat().st_mtime_ns for p in files}


def assert_refused(result: subprocess.CompletedProcess, message: str, work: Path, before: dict[Path, int]) -> str:
    """Non-zero exit, the message on one line, no traceback, and nothing downstream rewritten."""
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    lines = [line for line in out.splitlines() if message in line]
    assert lines, f"no line says {message!r}:\n{out[-4000:]}"
    assert "Traceback" not in out, out[-4000:]
    rewritten = [str(p) for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t]
    assert not rewritten, f"rebuilt from a bad file: {rewritten}"
    return lines[0]


def assert_identical_results(work: Path, finished: Path) -> None:
    for path in sorted((finished / RESULTS).glob("*.nc")):
        assert_same_numbers(load(work / RESULTS / path.name), load(path))


def copy_file(src: Path, dest: Path) -> None:
    """A copy, with the time of now: newer than what was built from the file it replaces."""
    shutil.copyfile(src, dest)


def set_attr(path: Path, **attrs) -> None:
    ds = load_dataset(path)
    ds.attrs.update(attrs)
    write_dataset(ds, path)


def garbage(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- tampered files: (what is done to the copy, the line the refusal must show) ---------------------------------


def _seed_swap(w):  # another seed's per-run result in seed 1's place
    copy_file(w / RUNS / "seed_0/interpolation.nc", w / RUNS / "seed_1/interpolation.nc")


def _experiment_swap(w):  # another experiment's per-run result
    copy_file(w / RUNS / "seed_0/hessian.nc", w / RUNS / "seed_0/flatness.nc")


def _recipe_relabel(w):  # a result of another recipe
    set_attr(w / RUNS / "seed_1/small_weights.nc", config_hash="0123456789abcdef")


def _mode_relabel(w):  # one run's result trained in another mode
    set_attr(w / RUNS / "seed_1/interpolation.nc", training_mode="compiled float32 on cuda")


def _truncated_result(w):
    truncate(w / RUNS / "seed_1/small_weights.nc")


def _garbage_result(w):
    garbage(w / RUNS / "seed_1/landscape.nc")


def _level_swap_weights(w):  # w_1 in w_2's place; E8 of seed 0 rerun
    copy_file(w / RUNS / "seed_0/run/level_01/final.pt", w / RUNS / "seed_0/run/level_02/final.pt")
    (w / RUNS / "seed_0/small_weights.nc").unlink()


def _seed_swap_weights(w):  # seed 1's w_1 in seed 0's run; E2 of seed 0 rerun
    copy_file(w / RUNS / "seed_1/run/level_01/final.pt", w / RUNS / "seed_0/run/level_01/final.pt")
    (w / RUNS / "seed_0/interpolation.nc").unlink()


def _level_swap_mask(w):
    copy_file(w / RUNS / "seed_0/run/level_01/mask.pt", w / RUNS / "seed_0/run/level_02/mask.pt")
    (w / RUNS / "seed_0/small_weights.nc").unlink()


def _garbage_weights(w):
    garbage(w / RUNS / "seed_1/run/level_02/final.pt")
    (w / RUNS / "seed_1/small_weights.nc").unlink()


def _truncated_mask(w):
    truncate(w / RUNS / "seed_1/run/level_01/mask.pt")
    (w / RUNS / "seed_1/small_weights.nc").unlink()


def _relabelled_run(w):  # run.json of seed 1's folder says seed 0
    info_path = w / RUNS / "seed_1/run/run.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "seed": 0}))
    (w / RUNS / "seed_1/landscape.nc").unlink()


def _moved_run(w):  # seed 0's whole folder in seed 1's place; seed 1's IMP rerun
    shutil.rmtree(w / RUNS / "seed_1/run")
    shutil.copytree(w / RUNS / "seed_0/run", w / RUNS / "seed_1/run")
    (w / RUNS / "seed_1/imp.nc").unlink()


def _unlabelled_metrics(w):  # a metrics file without identity (an older version's); seed 0's IMP rerun
    path = w / RUNS / "seed_0/run/level_01/metrics.json"
    record = json.loads(path.read_text())
    del record["identity"]
    path.write_text(json.dumps(record))
    (w / RUNS / "seed_0/imp.nc").unlink()


def _seed_swap_metrics(w):
    copy_file(w / RUNS / "seed_1/run/level_02/metrics.json", w / RUNS / "seed_0/run/level_02/metrics.json")
    (w / RUNS / "seed_0/imp.nc").unlink()


def _other_config_aggregate(w):  # an aggregate of another workflow configuration
    set_attr(w / RESULTS / "interpolation.nc", workflow_config="embedded")


def _garbage_aggregate(w):
    garbage(w / RESULTS / "small_weights.nc")


def _deleted_checkpoint(w):  # w_1 gone while imp.nc stands on it (IMP per run: not an output)
    (w / RUNS / "seed_0/run/level_01/final.pt").unlink()


TAMPERED = {
    "another seed's result": (_seed_swap, "seed_1/interpolation.nc holds seeds [0] where seeds [1] is expected"),
    "another experiment's result": (
        _experiment_swap,
        "seed_0/flatness.nc holds experiment E4_hessian where experiment E7_flatness is expected",
    ),
    "another recipe's result": (
        _recipe_relabel,
        "seed_1/small_weights.nc holds recipe hash 0123456789abcdef where recipe hash",
    ),
    "a result trained in another mode": (_mode_relabel, "were trained in different modes (training mode:"),
    "a truncated result": (_truncated_result, "seed_1/small_weights.nc is not a readable netCDF file"),
    "a garbage result": (_garbage_result, "seed_1/landscape.nc is not a readable netCDF file"),
    "another level's weights": (
        _level_swap_weights,
        "seed_0/run/level_02/final.pt holds level 1 where level 2 is expected; it is not this run's file",
    ),
    "another seed's weights": (
        _seed_swap_weights,
        "seed_0/run/level_01/final.pt holds seed 1 where seed 0 is expected; it is not this run's file",
    ),
    "another level's mask": (_level_swap_mask, "seed_0/run/level_02/mask.pt holds level 1 where level 2 is expected"),
    "garbage weights": (_garbage_weights, "seed_1/run/level_02/final.pt (UnpicklingError"),
    "a truncated mask": (_truncated_mask, "seed_1/run/level_01/mask.pt ("),
    "a relabelled run folder": (_relabelled_run, "seed_1/run/run.json holds seed 0 where seed 1 is expected"),
    "a run folder moved to another seed's place": (
        _moved_run,
        "seed_1/run holds the run of seed 0 (its run.json) where the config expects seed 1",
    ),
    "a metrics file without identity": (
        _unlabelled_metrics,
        "seed_0/run/level_01/metrics.json carries no identity",
    ),
    "another seed's metrics": (_seed_swap_metrics, "seed_0/run/level_02/metrics.json holds seed 1 where seed 0"),
    "an aggregate of another configuration": (
        _other_config_aggregate,
        "interpolation.nc holds workflow config embedded where workflow config test is expected",
    ),
    "a garbage aggregate": (_garbage_aggregate, "cnn/small_weights.nc is not a readable netCDF file"),
    "a deleted checkpoint": (
        _deleted_checkpoint,
        "seed_0/run is missing level_01/final.pt, which results/test/cnn/rewind_5/seed_0/imp.nc and the run's "
        "analyses stand on: remove results/test/cnn/rewind_5/seed_0/imp.nc and run snakemake again",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_file_is_refused(case, finished, data_env, tmp_path):
    tamper, message = TAMPERED[case]
    work = copy_finished(finished, tmp_path / "work")
    tamper(work)
    before = downstream(work)
    assert_refused(snakemake(work, *CONFIG, env=data_env), message, work, before)
    # nothing was left that a rerun would trust: the next run still has the refused work to do (or, for a
    # run folder that lost files, says so again)
    dry = snakemake(work, *CONFIG, "-n", env=data_env)
    out = dry.stdout + dry.stderr
    assert (dry.returncode != 0 and message in out) or (dry.returncode == 0 and "Nothing to be done" not in out)


# --- broken states with a way out: the rerun gives the untouched run's numbers ----------------------------------


def test_the_way_out_of_a_deleted_checkpoint(finished, data_env, tmp_path):
    """The refusal's command (remove imp.nc, run again) retrains the missing level: identical results."""
    work = copy_finished(finished, tmp_path / "work")
    _deleted_checkpoint(work)
    assert snakemake(work, *CONFIG, env=data_env).returncode != 0
    (work / RUNS / "seed_0/imp.nc").unlink()
    ok(snakemake(work, *CONFIG, env=data_env))
    assert_identical_results(work, finished)
    state = torch.load(work / RUNS / "seed_0/run/level_01/final.pt", weights_only=True)
    same = torch.load(finished / RUNS / "seed_0/run/level_01/final.pt", weights_only=True)
    assert state["identity"] == same["identity"]
    assert all(torch.equal(state["state"][k], same["state"][k]) for k in same["state"])


def test_a_deleted_or_stale_per_run_result_is_rebuilt(finished, data_env, tmp_path):
    """A per-run result deleted under its aggregate is regenerated (and the aggregate, figures and claims
    rebuilt on it) by the plain command; a per-run result rewritten after its aggregate rebuilds the
    aggregate (Snakemake compares checksums: a file only touched, with the same bytes, is not stale)."""
    work = copy_finished(finished, tmp_path / "work")
    (work / RUNS / "seed_1/flatness.nc").unlink()
    set_attr(work / RUNS / "seed_0/small_weights.nc", created="rewritten")  # same numbers, another file
    out = ok(snakemake(work, *CONFIG, env=data_env))
    assert "rule flatness:" in out and "rule fig7_flat_directions:" in out and "rule claims:" in out
    assert "rule fig8_small_weights:" in out
    assert_identical_results(work, finished)
    assert "Nothing to be done" in ok(snakemake(work, *CONFIG, "-n", env=data_env))


def test_a_changed_training_mode_restarts_never_mixes(finished, data_env, tmp_path):
    """`compile: true` in the config reruns every run from its first job (whose fresh_run starts the
    folder over); continuing an eager run compiled by hand is refused in one line."""
    work = copy_finished(finished, tmp_path / "work")
    arch = yaml.safe_load((work / "config/test.yaml").read_text())["architectures"][0]
    overlay = write_yaml(tmp_path / "compiled.yaml", {"architectures": [{**arch, "compile": True}]})
    out = ok(snakemake(work, *CONFIG, overlay, "-n", env=data_env))
    assert "reason: Params have changed since last execution" in out
    assert len([line for line in out.splitlines() if line.startswith("rule imp:")]) == 2
    run = work / RUNS / "seed_0/run"
    (run / "level_02/final.pt").unlink()
    info = json.loads((run / "run.json").read_text())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in info["recipe"].items() if k != "name"}))
    result = subprocess.run(
        [str(BIN / "unmasking"), "imp", "--run", str(run), "--recipe", "mnist1d-cnn", "--config", str(recipe)]
        + ["--seed", "0", "--levels", "2", "--compile", "--quiet", "--device", "cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, **data_env, "OMP_NUM_THREADS": "1"},  # the job's threads (resources: 1)
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"{run} was trained eager float32 on cpu with 1 thread; this command would continue it compiled float32 on "
        f"cpu with 1 thread, which mixes two modes in one run: continue it without --compile"
    ) in result.stderr
    assert not (run / "level_02/final.pt").exists()


# --- kills at random moments -----------------------------------------------------------------------------------


def test_kills_at_random_moments_of_training_end_identical(finished, data_env, tmp_path):
    """`unmasking imp` of seed 0 (the workflow's command) SIGKILLed three times, each at a random moment
    after the run made progress, then rerun to the end: every checkpoint of the run and its imp.nc equal
    the untouched run's, bit for bit, and no temporary file of an interrupted write is left."""
    info = json.loads((finished / RUNS / "seed_0/run/run.json").read_text())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in info["recipe"].items() if k != "name"}))
    run = tmp_path / "run"
    command = [str(BIN / "unmasking"), "imp", "--run", str(run), "--recipe", "mnist1d-cnn", "--config", str(recipe)]
    command += ["--seed", "0", "--levels", "2", "--out", str(tmp_path / "imp.nc"), "--quiet", "--device", "cpu"]
    env = {**os.environ, **data_env, "OMP_NUM_THREADS": "1"}
    rng = random.Random(2026)

    def files() -> list[str]:
        return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) if run.exists() else []

    killed = 0
    for _ in range(3):  # each kill lands a random moment after the run made progress (a new file)
        before = files()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and files() == before:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 2, f"only {killed} of 3 kills landed before the run ended"
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run / "run.json").read_text())["recipe_hash"] == info["recipe_hash"]
    for path in sorted((finished / RUNS / "seed_0/run").rglob("*.pt")):
        a = torch.load(path, weights_only=True)
        b = torch.load(run / path.relative_to(finished / RUNS / "seed_0/run"), weights_only=True)
        assert a["identity"]["kind"] == b["identity"]["kind"]
        assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"]), path
    assert not list(run.rglob("*.ckpt")) and not list(run.rglob(".*.tmp"))
    assert_same_numbers(load(tmp_path / "imp.nc"), load(finished / RUNS / "seed_0/imp.nc"))


def test_a_killed_workflow_unlocks_and_ends_identical(finished, data_env, tmp_path):
    """The whole workflow (Snakemake and its jobs) SIGKILLed at a random moment while seed 1's results are
    rebuilt: the next run stops on Snakemake's lock and names `--unlock`; after it, the run ends with
    the untouched run's numbers."""
    work = copy_finished(finished, tmp_path / "work")
    for exp in ("imp", "interpolation", "hessian", "small_weights"):
        (work / RUNS / f"seed_1/{exp}.nc").unlink()
    shutil.rmtree(work / RUNS / "seed_1/run")
    proc = subprocess.Popen(
        snakemake_cmd(*CONFIG),
        cwd=work,
        env={**os.environ, **data_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (work / RUNS / "seed_1/run/rewind.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(7).uniform(0.5, 4.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    locked = snakemake(work, *CONFIG, env=data_env)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    ok(snakemake(work, *CONFIG, "--unlock", env=data_env))
    ok(snakemake(work, *CONFIG, env=data_env))
    assert_identical_results(work, finished)
