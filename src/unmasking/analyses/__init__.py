"""The geometry analyses of SPEC §3 (E2–E9), one module per experiment, plus their shared retraining helper.

Each experiment's module (named in :data:`unmasking.foundations.registry.EXPERIMENTS`) holds a
settings dataclass (``SETTINGS``: the experiment's options, from which the ``unmasking``
subcommand's flags are generated) and a library entry point ``analyse(run, levels, settings, ...)``
that returns an ``xarray.Dataset``.  Nothing here parses command lines: that is
:mod:`unmasking.commands`.
"""
