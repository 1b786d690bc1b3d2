"""The planning of the Snakemake workflow, importable and unit-tested without Snakemake.

The rule files (``workflow/rules/*.smk``) hold paths, input functions and command lines; what
jobs and files a configuration asks for is decided here:

- :mod:`.schema`: one line per schema violation of a config (key, problem, fix);
- :mod:`.paths`: where results, logs, benchmarks and figures of a configuration go;
- :mod:`.plan`: the architectures with their recipes resolved, the cross-key checks, the runs
  and levels of every experiment, the per-job and aggregated results, the figure targets;
- :mod:`.smoke`: a config's smoke test (same structure, sizes shrunk by rule);
- :mod:`.report`: the claims' verdicts shown in the Snakemake report.

Experiments and figures are read from :mod:`unmasking.foundations.registry`.  Errors are
:class:`PlanError` (a :class:`~unmasking.foundations.hparams.ConfigError`); ``common.smk`` turns
them into Snakemake's ``WorkflowError``.  Importing this package imports neither torch nor
Snakemake.
"""

from .paths import Paths
from .plan import Arch, Plan, PlanError
from .schema import check_config
from .smoke import shrink

__all__ = ["Arch", "Paths", "Plan", "PlanError", "check_config", "shrink"]
