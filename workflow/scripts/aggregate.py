"""Combine the per-job datasets of one experiment and architecture into one dataset.

Run by the workflow's ``aggregate`` rule (``snakemake.input``: per-job netCDF files;
``snakemake.params.rewind_steps``: the rewind step of each).  Each input gets a length-1
``rewind_step`` dimension, the inputs are combined along their coordinates (``seed``,
``level``, ``rewind_step``) by :func:`unmasking.foundations.netcdf.combine`, and a length-1 ``arch``
dimension is added, so that the aggregates of several architectures or configurations combine again.
Provenance that differs between the inputs (seeds, creation times) is kept per run in the
``runs`` attribute (JSON: ``rewind_<t>/seed_<s>`` -> that run's provenance).
"""

import json
import re
import sys
import traceback
from pathlib import Path

import xarray as xr

from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.identity import IdentityError, check_identity
from unmasking.foundations.netcdf import combine, load_dataset, write_dataset

PER_RUN_ATTRS = ("seed_", "git_commit", "config_hash", "created", "host", "device", "torch_version")


def _plain(value):
    """JSON form of numpy scalars and arrays read from netCDF attributes."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def run_key(path: Path) -> str:
    parts = path.parts
    i = next(i for i, p in enumerate(parts) if p.startswith("rewind_"))
    return f"{parts[i]}/{parts[i + 1]}"


REGENERATE = "it is not this job's result: delete it and run snakemake again, which regenerates it"
MODES = ("training_mode", "retraining_mode")  # how the networks were trained: one per aggregate


def check_per_job(path: str, ds: xr.Dataset, label: str, recipe_hash: str | None) -> None:
    """Refuse a per-job file whose experiment, recipe hash or seed differs from what its path stands for."""
    m = re.search(r"seed_(\d+)", str(path))
    held = {
        "experiment": ds.attrs.get("experiment"),
        "recipe_hash": ds.attrs.get("config_hash"),
        "seeds": [int(s) for s in ds.seed.values] if "seed" in ds.coords else None,
    }
    expect = {"experiment": label}
    if recipe_hash is not None:
        expect["recipe_hash"] = recipe_hash
    if m:
        expect["seeds"] = [int(m.group(1))]
    check_identity(path, held, expect, REGENERATE)


def check_one_mode(inputs: list[str], datasets: list[xr.Dataset]) -> None:
    """Refuse to aggregate results trained in different modes (compiled and eager, devices)."""
    for attr in MODES:
        held = {str(p): ds.attrs.get(attr) for p, ds in zip(inputs, datasets)}
        if len(set(held.values())) > 1:
            listed = "; ".join(f"{p}: {v}" for p, v in held.items())
            raise IdentityError(
                f"the per-job results were trained in different modes ({attr.replace('_', ' ')}: {listed}); one "
                f"aggregate never mixes modes: delete the results of the other mode and run snakemake again"
            )


def aggregate(
    inputs: list[str],
    rewind_steps: list[int],
    arch: str,
    experiment: str,
    config_name: str,
    label: str | None = None,
    recipe_hashes: list[str] | None = None,
) -> xr.Dataset:
    datasets, runs, loaded = [], {}, []
    for i, (path, t) in enumerate(zip(inputs, rewind_steps)):
        ds = load_dataset(path)
        loaded.append(ds)
        if label is not None:
            check_per_job(path, ds, label, recipe_hashes[i] if recipe_hashes else None)
        runs.setdefault(run_key(Path(path)), {k: v for k, v in ds.attrs.items() if k.startswith(PER_RUN_ATTRS)})
        if "rewind_step" in ds.coords and "rewind_step" not in ds.dims:
            ds = ds.drop_vars("rewind_step")
        datasets.append(ds.expand_dims(rewind_step=[int(t)]))
    check_one_mode(inputs, loaded)
    # data_vars="minimal": a variable without a level dimension (e.g. a run's dense error) is
    # the same in every per-level file of a run and stays without one.
    combined = combine(datasets, data_vars="minimal").expand_dims(arch=[arch])
    for name in ("arch", "rewind_step"):
        combined[name].attrs["description"] = {
            "arch": "architecture name in the workflow config",
            "rewind_step": "rewind step t of the IMP run",
        }[name]
    combined.attrs.update(
        {
            "experiment_name": experiment,
            "workflow_config": config_name,
            "arch_name": arch,
            "runs": json.dumps(runs, sort_keys=True, default=_plain),
            "inputs": json.dumps(list(map(str, inputs))),
        }
    )
    return combined


def main(smk) -> None:
    with open(smk.log[0], "w") as log:
        try:
            ds = aggregate(
                list(smk.input),
                list(smk.params.rewind_steps),
                smk.wildcards.arch,
                smk.wildcards.exp,
                smk.params.config_name,
                smk.params.label,
                list(smk.params.recipe_hashes),
            )
            out = write_dataset(ds, smk.output[0])
        except ConfigError as e:  # one line, no traceback: the file and the fix (IdentityError, unreadable file)
            print(f"aggregate: error: {e}", file=log)
            print(f"aggregate: error: {e}", file=sys.stderr)
            sys.exit(1)
        except Exception:
            traceback.print_exc(file=log)
            raise
        print(f"combined {len(smk.input)} files into {out}: {dict(ds.sizes)}", file=log)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (defined by Snakemake's script directive)
