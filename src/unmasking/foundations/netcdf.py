"""The results store: xarray datasets written atomically to netCDF with provenance.

Known pitfalls guarded here:
- netCDF attributes cannot hold dicts, bools or None: dicts/lists of non-numbers become
  JSON strings, bools become 0/1 integers, None is dropped.
- string coordinates read back from netCDF carry a fixed-width encoding; re-writing a
  combined dataset with the stale encoding truncates longer strings, so encodings are
  dropped when datasets are loaded for combining.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import xarray as xr

from .. import __version__
from .hparams import ConfigError
from .io import atomic_path


def git_commit() -> str:
    """Commit of the source tree the package runs from (``unknown`` outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(
    config_hash: str | None = None, seeds: dict[str, int] | None = None, device: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Attributes recorded in every output: versions, commit, config hash, seeds, device, time."""
    import torch

    attrs: dict[str, Any] = {
        "package": "unmasking",
        "package_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "host": platform.node(),
        "device": device or ("cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if config_hash is not None:
        attrs["config_hash"] = config_hash
    if seeds:
        attrs.update({f"seed_{k}": int(v) for k, v in seeds.items()})
    attrs.update(extra)
    return attrs


def _sanitize_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (dict, tuple, list)) and not (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Path):
        return str(value)
    return value


def sanitize_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Make attributes netCDF-safe (see module docstring)."""
    return {str(k): _sanitize_value(v) for k, v in attrs.items() if v is not None}


def write_dataset(ds: xr.Dataset, path: str | Path, attrs: dict[str, Any] | None = None) -> Path:
    """Write ``ds`` to ``path`` (netCDF4) atomically, with sanitized attributes on it and its variables."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs = sanitize_attrs({**ds.attrs, **(attrs or {})})
    for name in ds.variables:
        ds[name].attrs = sanitize_attrs(ds[name].attrs)
        ds[name].encoding = {}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return path


class UnreadableResultError(ConfigError):
    """A results file exists but cannot be read as netCDF (truncated, garbage); delete it and rerun its step."""


def load_dataset(path: str | Path) -> xr.Dataset:
    """Load a dataset fully into memory (the file is closed) with encodings dropped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist; run the step that writes it")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, ValueError, RuntimeError) as e:  # truncated, garbage or not netCDF at all
        why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"
        if path.suffix != ".nc":  # a wrong argument, not a damaged result: never advise deleting it
            raise UnreadableResultError(
                f"{path} is not a netCDF results file ({why}); pass the .nc file that unmasking wrote"
            ) from None
        raise UnreadableResultError(
            f"results file {path} is not a readable netCDF file ({why}); delete it and rerun the step that writes "
            f"it (in the workflow: `snakemake` regenerates a missing file)"
        ) from None
    ds.encoding = {}
    for name in ds.variables:
        ds[name].encoding = {}
    return ds


def combine(
    items: Iterable[str | Path | xr.Dataset],
    *,
    data_vars: str = "all",
    compat: str = "no_conflicts",
    coords: str = "different",
    join: str = "outer",
    combine_attrs: str = "drop_conflicts",
) -> xr.Dataset:
    """Combine result datasets (or the files holding them) along their shared coordinates.

    The one function that combines results: the workflow's aggregation, ``unmasking combine`` and the
    inputs of the figures and the claims all call it.  Files are loaded with :func:`load_dataset`.
    xarray's options are set explicitly (its defaults are changing), with these defaults:

    - ``join="outer"``: the union of the coordinates; a run missing somewhere is padded with NaN;
    - ``compat="no_conflicts"``: variables shared by several inputs must agree where both are non-NaN;
    - ``data_vars="all"`` concatenates every variable along the combined dimensions; ``"minimal"``
      (the aggregation, the figures, the claims) only those that have the dimension, so that a
      variable without a level dimension (a run's dense error) stays without one;
    - ``combine_attrs="drop_conflicts"``: attributes that differ between the inputs (creation
      times, seeds) are dropped from the combination; each input file keeps its provenance.

    Inputs with the same coordinates (the same run twice) do not combine: xarray's ``ValueError``.
    """
    datasets = [item if isinstance(item, xr.Dataset) else load_dataset(item) for item in items]
    if not datasets:
        raise ValueError("nothing to combine: no input files")
    combined = xr.combine_by_coords(
        datasets, data_vars=data_vars, compat=compat, coords=coords, join=join, combine_attrs=combine_attrs
    )
    if isinstance(combined, xr.DataArray):
        combined = combined.to_dataset()
    return combined
