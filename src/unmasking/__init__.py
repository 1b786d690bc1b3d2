"""Reproducibility artifact for "Unmasking the Lottery Ticket Hypothesis" (Paul et al., ICLR 2023).

Modules, in the order data flows: :mod:`config`/:mod:`recipes` (hyperparameters),
:mod:`models` and :mod:`data` (registries), :mod:`masks` (pruning), :mod:`training`
(masked SGD with rewinding), :mod:`imp` (the IMP runner), :mod:`analyses` (experiments
E2–E9), :mod:`results` (netCDF store), :mod:`figures` and :mod:`claims`.
"""

__version__ = "0.1.0"
