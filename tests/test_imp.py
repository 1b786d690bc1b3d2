"""The IMP runner: artifacts, idempotence, R_L/d_L, determinism, the CLI and its errors."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from unmasking import masks as M
from unmasking.commands import main
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.netcdf import load_dataset
from unmasking.imp import ImpRun

from conftest import tiny_recipe


def test_imp_artifacts_and_invariants(tmp_path):
    run = ImpRun(tiny_recipe("cnn1d"), seed=0, root=tmp_path / "run", device="cpu", progress=False)
    ds = run.run()
    assert ds.test_error.dims == ("seed", "level") and ds.level.values.tolist() == [0, 1, 2, 3]
    counts = [M.count(run.mask(level)) for level in range(4)]
    for a, b in zip(counts, counts[1:]):
        assert b == a - math.ceil(0.2 * a)
    assert ds.density.values[0].tolist() == pytest.approx([c / counts[0] for c in counts])
    assert ds.density.values[0].tolist() == pytest.approx([0.8**L for L in range(4)], rel=2e-3)
    for level in range(3):
        assert M.is_nested(run.mask(level + 1), run.mask(level))
        w, m, nxt = dict(run.solution(level).named_parameters()), run.mask(level), run.mask(level + 1)
        removed = M.difference(m, nxt)
        assert float(ds.projection_length[0, level]) == pytest.approx(M.masked_norm(w, removed))
        rewind = dict(run.rewind_model().named_parameters())
        assert float(ds.rewind_distance[0, level]) == pytest.approx(M.masked_norm(rewind, removed))
        for n in m:  # solutions are exactly zero off their mask
            assert torch.count_nonzero(w[n][~m[n]]) == 0
    assert math.isnan(float(ds.projection_length[0, 3]))
    assert ds.attrs["seed_init"] == run.seeds.init and ds.attrs["rewind_step"] == 4
    assert not list(tmp_path.rglob("*.ckpt"))


def test_finished_steps_are_not_redone_and_reruns_are_identical(tmp_path):
    run = ImpRun(tiny_recipe("mlp", levels=2), seed=3, root=tmp_path / "a", device="cpu", progress=False)
    first = run.run()
    stamp = run.final_path(1).stat().st_mtime_ns
    again = ImpRun(tiny_recipe("mlp", levels=2), seed=3, root=tmp_path / "a", device="cpu", progress=False).run()
    assert run.final_path(1).stat().st_mtime_ns == stamp
    other = ImpRun(tiny_recipe("mlp", levels=2), seed=3, root=tmp_path / "b", device="cpu", progress=False).run()
    for name in ("test_error", "train_loss", "projection_length", "rewind_distance"):
        assert first[name].equals(again[name]) and first[name].equals(other[name])


def test_compiled_imp_keeps_the_invariants_and_is_deterministic(tmp_path):
    """ImpRun(compile=True) trains through multitrain's compiled step: pruned weights stay exactly
    zero, masks nest, a second run gives the same numbers bitwise, and the networks are those of a
    one-model train_many with compile (the path E3 and E6 take)."""
    runs = [
        ImpRun(tiny_recipe("cnn1d", levels=1), seed=0, root=tmp_path / name, device="cpu", progress=False, compile=True)
        for name in "ab"
    ]
    a, b = (run.run() for run in runs)
    for name in ("test_error", "train_loss", "projection_length"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    run = runs[0]
    assert M.is_nested(run.mask(1), run.mask(0))
    w = dict(run.solution(1).named_parameters())
    assert all(torch.count_nonzero(w[n][~m]) == 0 for n, m in run.mask(1).items())
    assert all(
        torch.equal(x, y)
        for x, y in zip(run.solution(1).state_dict().values(), runs[1].solution(1).state_dict().values())
    )
    eager = ImpRun(tiny_recipe("cnn1d", levels=1), seed=0, root=tmp_path / "eager", device="cpu", progress=False)
    eager.run()
    assert not torch.equal(eager.solution(0).conv1.weight, run.solution(0).conv1.weight)  # not the eager path


def test_a_run_folder_refuses_another_config(tmp_path):
    ImpRun(tiny_recipe("mlp"), seed=0, root=tmp_path, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="different recipe or seed"):
        ImpRun(tiny_recipe("mlp", steps=40), seed=0, root=tmp_path, device="cpu", progress=False)


def test_every_file_of_a_run_carries_and_checks_its_identity(tmp_path):
    """Weights, masks and records say which run, seed, kind and level they are and in which mode the run
    trained; a file of another level, seed or kind in a place is refused in one line, as is a run.json
    that disagrees with its recipe or with w_0."""
    from unmasking.foundations.identity import IdentityError

    run = ImpRun(tiny_recipe("mlp", levels=2), seed=0, root=tmp_path / "a", device="cpu", progress=False)
    run.run()
    other = ImpRun(tiny_recipe("mlp", levels=2), seed=1, root=tmp_path / "b", device="cpu", progress=False)
    other.run()
    saved = torch.load(run.final_path(1), weights_only=True)
    assert saved["identity"] == {
        "recipe_hash": run.recipe.hash(),
        "seed": 0,
        "kind": "final",
        "level": 1,
        "mode": {"compile": False, "precision": "float32", "device": "cpu", "threads": torch.get_num_threads()},
        "package_version": saved["identity"]["package_version"],
    }
    info = json.loads((run.root / "run.json").read_text())
    assert info["mode"] == saved["identity"]["mode"] and info["seed"] == 0
    assert json.loads(run.metrics_path(2).read_text())["identity"]["kind"] == "metrics"

    def refused(match: str, step) -> str:
        with pytest.raises(IdentityError, match=match) as err:
            step()
        assert "\n" not in str(err.value)
        return str(err.value)

    import shutil

    shutil.copy(run.final_path(1), run.final_path(2))
    message = refused("final.pt holds level 1 where level 2 is expected", lambda: run.solution(2))
    assert "it is not this run's file: delete it" in message
    shutil.copy(other.final_path(2), run.final_path(2))
    refused("holds seed 1 where seed 0 is expected", lambda: run.solution(2))
    shutil.copy(run.mask_path(1), run.final_path(2))
    refused("holds kind mask, level 1 where kind final, level 2 is expected", lambda: run.solution(2))
    shutil.copy(other.metrics_path(1), run.metrics_path(1))
    refused("metrics.json holds seed 1 where seed 0", lambda: run.summary(2))
    # run.json against its own recipe, against w_0, and against the place the workflow expects
    shutil.copy(other.root / "init.pt", run.root / "init.pt")
    refused("init.pt holds seed 1 where seed 0 is expected; it disagrees with", lambda: ImpRun.open(run.root))
    shutil.copy(other.root / "run.json", run.root / "run.json")  # now both say seed 1: the place decides
    refused("run.json holds seed 1 where seed 0 is expected; the folder was moved", lambda: ImpRun.open(run.root, 0))
    info["recipe"]["train"]["steps"] = 31
    (run.root / "run.json").write_text(json.dumps(info))
    refused("run.json is inconsistent: its recipe hashes to", lambda: ImpRun.open(run.root))


def test_a_run_continues_only_in_its_training_mode(tmp_path, monkeypatch):
    """Compiled or eager, the device type and (on a CPU) torch's threads are the run's training mode: a
    step that would train in another is refused, naming how to continue; a finished level is still read."""
    from unmasking.foundations.identity import IdentityError

    run = ImpRun(tiny_recipe("mlp", levels=1), seed=0, root=tmp_path, device="cpu", progress=False)
    run.run()
    run.final_path(1).unlink()
    run.metrics_path(1).unlink()
    compiled = ImpRun.open(tmp_path, device="cpu", progress=False, compile=True)
    assert compiled.train_level(0)["level"] == 0  # finished: read, not trained
    with pytest.raises(
        IdentityError,
        match=r"was trained eager float32 on cpu with 1 thread; this command would "
        r"continue it compiled float32 on cpu with 1 thread, .* continue it without --compile",
    ):
        compiled.train_level(1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    with pytest.raises(IdentityError, match="continue it with OMP_NUM_THREADS=1"):
        ImpRun.open(tmp_path, device="cpu", progress=False).train_level(1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: no CUDA GPU is available here"):
            ImpRun.open(tmp_path, device="cuda")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    run = ImpRun(tiny_recipe("mlp", levels=1), seed=0, root=tmp_path, device="cpu", progress=False)
    run.run()
    run.final_path(0).write_bytes(b"\x00garbage")
    (run.level_dir(1) / "prune.json").unlink()
    assert main(["prune", "--run", str(tmp_path), "--level", "0", "--quiet"]) == 2
    assert "corrupt" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_imp_on_mnist1d(tmp_path):
    """The console script end to end on the real embedded data (2 levels, shortened schedule)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "unmasking",
            "imp",
            "--recipe",
            "mnist1d-cnn",
            "--run",
            str(tmp_path / "r"),
            "--seed",
            "1",
            "--levels",
            "2",
            "--quiet",
            "--set",
            "train.steps=200",
            "train.milestones=[100]",
            "prune.rewind_step=10",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"wrote {tmp_path / 'r' / 'imp.nc'}" in out.stdout
    ds = load_dataset(tmp_path / "r" / "imp.nc")
    assert ds.seed.values.tolist() == [1] and ds.level.values.tolist() == [0, 1, 2]
    assert float(ds.test_error[0, 0]) < 0.5
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["recipe"]["train"]["steps"] == 200


def test_cli_negative_levels_is_refused(tmp_path, capsys):
    """`--levels -1` used to write an empty imp.nc and exit 0."""
    out = tmp_path / "imp.nc"
    code = main(["imp", "--recipe", "mnist1d-cnn", "--run", str(tmp_path / "r"), "--levels", "-1", "--out", str(out)])
    assert code == 2
    assert "the last IMP level must be an integer >= 0" in capsys.readouterr().err
    assert not out.exists()


def test_cli_bad_key_exits_nonzero_with_message(tmp_path, capsys):
    code = main(["imp", "--recipe", "mnist1d-cnn", "--run", str(tmp_path / "r"), "--set", "train.lrate=1"])
    assert code == 2
    assert "unknown config key 'train.lrate'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
