"""workflow/scripts/compare_results.py: identical results pass, any changed number is reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import xarray as xr

from unmasking.foundations.netcdf import write_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "compare_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("compare_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(root: Path, error: np.ndarray, created: str) -> Path:
    ds = xr.Dataset(
        {"test_error": (("seed", "level"), error), "density": ("level", [1.0, 0.8])},
        coords={"seed": [0, 1], "level": [0, 1]},
        attrs={"created": created},
    )
    write_dataset(ds, root / "cnn" / "imp.nc")
    return root


def test_identical_values_pass_whatever_the_attributes(tmp_path, capsys):
    error = np.array([[0.1, np.nan], [0.2, 0.3]])
    a = _results(tmp_path / "a", error, "monday")
    b = _results(tmp_path / "b", error.copy(), "tuesday")
    assert _module().main([str(a), str(b)]) == 0
    assert "1 of 1 aggregated files identical" in capsys.readouterr().out


def test_a_changed_value_a_missing_variable_and_a_missing_file_are_reported(tmp_path, capsys):
    m = _module()
    error = np.array([[0.1, 0.2], [0.2, 0.3]])
    a = _results(tmp_path / "a", error, "x")
    changed = error.copy()
    changed[1, 1] += 1e-12
    b = _results(tmp_path / "b", changed, "x")
    assert m.main([str(a), str(b)]) == 1
    assert "test_error: values differ (max |difference| 1e-12)" in capsys.readouterr().out

    c = tmp_path / "c"
    with xr.open_dataset(a / "cnn" / "imp.nc") as opened:
        ds = opened.load().drop_vars("density")
    write_dataset(ds, c / "cnn" / "imp.nc")
    write_dataset(ds, c / "mlp" / "imp.nc")
    assert m.main([str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert "variable density only in the first" in out and "DIFFERENT mlp/imp.nc: only in" in out
