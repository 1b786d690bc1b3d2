"""Compare the aggregated results of two workflow runs: every variable and coordinate, value for value.

    python workflow/scripts/compare_results.py results/embedded /path/to/other/results/embedded

Compares each ``<arch>/<experiment>.nc`` present in either folder (aggregates only; per-run files
under ``rewind_*`` are left out): the same files, the same variables with the same dimensions,
coordinates and values (NaN equal to NaN, bit for bit otherwise). Attributes are provenance
(creation times, hosts, commits, input paths) and are not compared. Prints one line per file and
exits 1 when anything differs, so a restructuring can show that it changed no number.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr


def aggregates(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob("*/*.nc")}


def differences(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """What differs between two datasets, attributes aside (empty: identical)."""
    out = []
    for kind, names_a, names_b in (
        ("variable", set(a.data_vars), set(b.data_vars)),
        ("coordinate", set(a.coords), set(b.coords)),
    ):
        for name in sorted(names_a ^ names_b):
            out.append(f"{kind} {name} only in {'the first' if name in names_a else 'the second'}")
        for name in sorted(names_a & names_b):
            va, vb = a[name], b[name]
            if va.dims != vb.dims or va.shape != vb.shape:
                out.append(f"{kind} {name}: dims {va.dims}{va.shape} vs {vb.dims}{vb.shape}")
                continue
            x, y = va.values, vb.values
            if x.dtype.kind in "fc" and y.dtype.kind in "fc":
                same = np.array_equal(x, y, equal_nan=True)
            else:
                same = np.array_equal(x.astype(str), y.astype(str))
            if not same:
                if x.dtype.kind in "fc":
                    diff = np.nanmax(np.abs(x.astype(float) - y.astype(float)))
                    out.append(f"{kind} {name}: values differ (max |difference| {diff:.3g})")
                else:
                    out.append(f"{kind} {name}: values differ")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    first, second = map(Path, argv)
    for root in (first, second):
        if not root.is_dir():
            print(f"compare_results: {root} is not a folder of results", file=sys.stderr)
            return 2
    files = aggregates(first) | aggregates(second)
    bad = 0
    for rel in sorted(files):
        pa, pb = first / rel, second / rel
        if not (pa.exists() and pb.exists()):
            print(f"DIFFERENT {rel}: only in {first if pa.exists() else second}")
            bad += 1
            continue
        with xr.open_dataset(pa) as a, xr.open_dataset(pb) as b:
            diffs = differences(a.load(), b.load())
        n_vars = len(a.data_vars)
        print(
            f"{'DIFFERENT' if diffs else 'identical'} {rel} ({n_vars} variables)" + "".join(f"\n    {d}" for d in diffs)
        )
        bad += bool(diffs)
    print(f"{len(files) - bad} of {len(files)} aggregated files identical (variables and values; attributes aside)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
