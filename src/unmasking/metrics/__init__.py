"""The results layer: what the figures and the claims read from the aggregated datasets, free of torch and
matplotlib.

- :mod:`.inputs`: result files to ``{experiment: dataset}`` (which experiment a file holds, combining files);
- :mod:`.selection`: one architecture and rewind step of an aggregate (``arch, rewind_step, seed, level, …``);
- :mod:`.levels`: the % of weights remaining per level, and picking a few levels to show;
- :mod:`.statistics`: statistics over seeds (mean, spread, count);
- :mod:`.matching`: the dense error, ``ε_match`` and which levels (and successive pairs) are matching;
- :mod:`.pruning`: E6's headline criterion and ``p*`` recomputed at another tolerance.

A figure and the claims report computing a number from the same data use the same function here, so a
level shaded "matching" in a figure is the level the report counts.  Imports only
:mod:`unmasking.foundations`, numpy and xarray.
"""
