"""Where a workflow configuration writes: results, logs, benchmarks and figures, all under its name.

A run is one (architecture, rewind step, seed); its files live in :attr:`Paths.run`, a pattern
with the Snakemake wildcards ``{arch}``, ``{rewind}`` and ``{seed}``, and its IMP folder is
``<run>/run``.  Paths are relative to the workflow's working directory.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_PATTERN = "{arch}/rewind_{rewind}/seed_{seed}"


@dataclass(frozen=True)
class Paths:
    """The folders and file patterns of the configuration called ``name``."""

    name: str

    @property
    def results(self) -> str:
        return f"results/{self.name}"

    @property
    def logs(self) -> str:
        return f"logs/{self.name}"

    @property
    def benchmarks(self) -> str:
        """Snakemake's benchmark files (wall and CPU time, memory per job)."""
        return f"benchmarks/{self.name}"

    @property
    def figures(self) -> str:
        return f"figures/{self.name}"

    @property
    def run(self) -> str:
        """Folder of a run's files (wildcards arch, rewind, seed)."""
        return f"{self.results}/{RUN_PATTERN}"

    @property
    def run_log(self) -> str:
        return f"{self.logs}/{RUN_PATTERN}"

    @property
    def run_benchmark(self) -> str:
        return f"{self.benchmarks}/{RUN_PATTERN}"

    def run_of(self, arch: str, rewind: int, seed: int) -> str:
        """The folder of one run."""
        return self.run.format(arch=arch, rewind=rewind, seed=seed)

    def aggregate(self, arch: str, exp: str) -> str:
        """The combined dataset of an experiment for an architecture."""
        return f"{self.results}/{arch}/{exp}.nc"

    def figure_stem(self, fig_id: str, split: str) -> str:
        """A figure's file without suffix (wildcard arch); the train-error variant ends in `_train`."""
        return f"{self.figures}/{{arch}}/{fig_id}{'_train' if split == 'train' else ''}"

    @property
    def claims(self) -> dict[str, str]:
        """The claims report: json (read back for the report's verdicts), md and html."""
        return {ext: f"{self.figures}/claims.{ext}" for ext in ("json", "md", "html")}
