"""The geometry analyses of SPEC §3 (E2–E9).

Each module is one experiment: a library function that returns an ``xarray.Dataset`` and a
``register(subparsers)`` hook that adds its CLI subcommand (discovered by :mod:`unmasking.cli`).
"""
