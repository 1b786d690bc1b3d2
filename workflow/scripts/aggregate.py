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
import traceback
from pathlib import Path

import xarray as xr

from unmasking.foundations.netcdf import combine, load_dataset, write_dataset

PER_RUN_ATTRS = ("seed_", "git_commit", "config_hash", "created", "host", "device", "torch_version")


def _plain(value):
    """JSON form of numpy scalars and arrays read from netCDF attributes."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def run_key(path: Path) -> str:
    parts = path.parts
    i = next(i for i, p in enumerate(parts) if p.startswith("rewind_"))
    return f"{parts[i]}/{parts[i + 1]}"


def aggregate(inputs: list[str], rewind_steps: list[int], arch: str, experiment: str, config_name: str) -> xr.Dataset:
    datasets, runs = [], {}
    for path, t in zip(inputs, rewind_steps):
        ds = load_dataset(path)
        runs.setdefault(run_key(Path(path)), {k: v for k, v in ds.attrs.items() if k.startswith(PER_RUN_ATTRS)})
        if "rewind_step" in ds.coords and "rewind_step" not in ds.dims:
            ds = ds.drop_vars("rewind_step")
        datasets.append(ds.expand_dims(rewind_step=[int(t)]))
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
            )
            out = write_dataset(ds, smk.output[0])
        except Exception:
            traceback.print_exc(file=log)
            raise
        print(f"combined {len(smk.input)} files into {out}: {dict(ds.sizes)}", file=log)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (defined by Snakemake's script directive)
