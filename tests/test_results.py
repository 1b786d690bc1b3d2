"""The netCDF store: atomic writes, provenance, and the known xarray/netCDF pitfalls."""

import numpy as np
import pytest
import xarray as xr

from unmasking.commands import main as cli_main
from unmasking.foundations.netcdf import (
    UnreadableResultError,
    combine,
    load_dataset,
    provenance,
    sanitize_attrs,
    write_dataset,
)


def _ds(arch, seed, values):
    return xr.Dataset(
        {"err": (("arch", "seed", "level"), np.array(values, dtype=float)[None, None])},
        coords={"arch": [arch], "seed": [seed], "level": np.arange(len(values))},
    )


def test_attrs_that_netcdf_rejects_are_sanitized(tmp_path):
    ds = _ds("cnn", 0, [0.1, 0.2])
    attrs = {
        "recipe": {"train": {"lr": 0.1}},
        "flag": True,
        "missing": None,
        "grid": [0.0, 0.5, 1.0],
        "names": ["a", "b"],
    }
    path = write_dataset(ds, tmp_path / "x.nc", attrs)
    back = load_dataset(path)
    assert back.attrs["recipe"] == '{"train": {"lr": 0.1}}'
    assert back.attrs["flag"] == 1 and "missing" not in back.attrs
    assert list(back.attrs["grid"]) == [0.0, 0.5, 1.0]
    assert back.attrs["names"] == '["a", "b"]'
    assert sanitize_attrs({"x": False}) == {"x": 0}


def test_provenance_fields():
    p = provenance("abc", {"init": 1, "order": 2}, "cpu")
    for key in ("package_version", "git_commit", "torch_version", "device", "created", "config_hash"):
        assert key in p
    assert p["seed_init"] == 1 and p["seed_order"] == 2


def test_string_coordinates_survive_combine_and_rewrite(tmp_path):
    a = write_dataset(_ds("mlp", 0, [0.1, 0.2]), tmp_path / "a.nc")
    b = write_dataset(_ds("resnet20-cifar10", 0, [0.3, 0.4]), tmp_path / "b.nc")
    c = write_dataset(_ds("mlp", 1, [0.5, 0.6]), tmp_path / "c.nc")
    combined = combine([a, b, c])
    out = write_dataset(combined, tmp_path / "all.nc")
    back = load_dataset(out)
    assert sorted(back.arch.values.tolist()) == ["mlp", "resnet20-cifar10"]
    assert float(back.err.sel(arch="resnet20-cifar10", seed=0, level=1)) == 0.4
    assert np.isnan(float(back.err.sel(arch="resnet20-cifar10", seed=1, level=0)))
    again = write_dataset(combine([out]), tmp_path / "again.nc")
    assert "resnet20-cifar10" in load_dataset(again).arch.values.tolist()


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "x.nc"
    write_dataset(_ds("a", 0, [1.0]), path)
    before = path.read_bytes()

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(RuntimeError):
        write_dataset(_ds("a", 0, [2.0]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.nc"]


def test_missing_results_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the step"):
        load_dataset(tmp_path / "nope.nc")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_results_file_is_one_clear_error(tmp_path, damage, capsys):
    """A results file that exists but is not readable netCDF: one line naming it and the fix, exit 2, no
    traceback and no output (also through `unmasking combine`)."""
    good = tmp_path / "good.nc"
    write_dataset(xr.Dataset({"x": ("level", [1.0, 2.0])}, coords={"level": [0, 1]}), good)
    bad = tmp_path / "bad.nc"
    data = good.read_bytes()
    bad.write_bytes(
        {"garbage": b"not a netCDF file at all\n" * 40, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    with pytest.raises(UnreadableResultError, match="is not a readable netCDF file") as err:
        load_dataset(bad)
    assert str(bad) in str(err.value) and "delete it and rerun" in str(err.value) and "\n" not in str(err.value)
    out = tmp_path / "all.nc"
    assert cli_main(["combine", str(good), str(bad), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is not a readable netCDF file" in lines[0] and "Traceback" not in lines[0]
    assert not out.exists()


def test_cli_combine_refuses_mixed_experiments_and_recipes(tmp_path, capsys):
    """Files of different experiments (or recipes) used to merge with their labels dropped (exit 0)."""

    def part(name, seed, experiment="E1_imp", config_hash="aaaa"):
        ds = xr.Dataset({"err": (("seed", "level"), [[0.1 * seed]])}, coords={"seed": [seed], "level": [0]})
        ds.attrs.update(experiment=experiment, config_hash=config_hash)
        return write_dataset(ds, tmp_path / f"{name}.nc")

    s0, s1 = part("s0", 0), part("s1", 1)
    other_exp, other_recipe = part("e2", 2, experiment="E2_interpolation"), part("r", 3, config_hash="bbbb")
    out = tmp_path / "all.nc"
    assert cli_main(["combine", str(s0), str(s1), "--out", str(out)]) == 0  # one experiment, one recipe: seeds
    assert list(load_dataset(out).seed.values) == [0, 1] and load_dataset(out).attrs["experiment"] == "E1_imp"
    capsys.readouterr()
    for bad, what in ((other_exp, "different experiments"), (other_recipe, "different recipes")):
        out.unlink(missing_ok=True)
        assert cli_main(["combine", str(s0), str(bad), "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and what in lines[0] and str(bad) in lines[0] and "--allow-mixed" in lines[0]
        assert not out.exists()
    assert cli_main(["combine", str(s0), str(other_exp), "--out", str(out), "--allow-mixed"]) == 0
    # the same run twice does not combine: one line, not xarray's traceback
    out.unlink()
    assert cli_main(["combine", str(s0), str(s0), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "the inputs do not combine" in lines[0] and not out.exists()
    # a file that is not a results file at all (a wrong argument): never "delete it"
    (tmp_path / "run.json").write_text("{}")
    assert cli_main(["combine", str(s0), str(tmp_path / "run.json"), "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert "run.json is not a netCDF results file" in line and "delete" not in line


def _level_file(seed, level, err, dense, created):
    """One per-level job's output: an error at its level and the run's dense error (no level dim)."""
    return xr.Dataset(
        {"err": (("seed", "level"), [[err]]), "dense": ("seed", [dense])},
        coords={"seed": [seed], "level": [level]},
        attrs={"experiment": "E1_imp", "created": created},
    )


def test_combine_pads_missing_runs(tmp_path):
    """join="outer": the union of the coordinates, NaN where a run has no value; files or datasets alike."""
    parts = [
        _level_file(0, 0, 0.10, 0.10, "t0"),
        _level_file(0, 1, 0.20, 0.10, "t1"),
        _level_file(1, 1, 0.40, 0.30, "t2"),
    ]
    out = combine(parts, data_vars="minimal")
    assert out.seed.values.tolist() == [0, 1] and out.level.values.tolist() == [0, 1]
    np.testing.assert_array_equal(out.err.values, [[0.10, 0.20], [np.nan, 0.40]])
    assert out.dense.dims == ("seed",) and out.dense.values.tolist() == [0.10, 0.30]
    paths = [write_dataset(ds, tmp_path / f"{i}.nc") for i, ds in enumerate(parts)]
    xr.testing.assert_identical(combine([paths[0], parts[1], paths[2]], data_vars="minimal"), out)


def test_combine_data_vars_all_concatenates_every_variable():
    """data_vars="all" (the default, as `unmasking combine` always had): the dense error gets a level dim;
    combine_attrs="drop_conflicts": the attributes that differ (creation times) are dropped."""
    out = combine([_level_file(0, 0, 0.10, 0.10, "t0"), _level_file(0, 1, 0.20, 0.10, "t1")])
    assert out.dense.dims == ("level", "seed") and out.dense.values.tolist() == [[0.10], [0.10]]
    assert out.attrs == {"experiment": "E1_imp"}


def test_combine_refuses_overlapping_or_conflicting_inputs():
    same = _level_file(0, 1, 0.20, 0.10, "t0")
    with pytest.raises(ValueError, match="dimension coordinates"):
        combine([same, same.copy()])  # the same run twice
    with pytest.raises(ValueError, match="conflicting values"):  # compat="no_conflicts"
        combine([_level_file(0, 0, 0.10, 0.10, "t0"), _level_file(0, 1, 0.20, 0.99, "t1")], data_vars="minimal")
    with pytest.raises(ValueError, match="nothing to combine"):
        combine([])
