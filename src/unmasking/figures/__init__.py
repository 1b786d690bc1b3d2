"""The paper's figures (SPEC §4): one module per figure, each a function from aggregated datasets to a
matplotlib figure, sharing :mod:`unmasking.figures.style`.

:func:`make_figure` renders one figure, named by its id in
:data:`unmasking.foundations.registry.FIGURES`, from result files (the Python entry point of
``unmasking figure``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..foundations.hparams import ConfigError
from ..foundations.registry import FIGURES

__all__ = ["figure_module", "make_figure", "out_stem"]


def figure_module(figure_id: str):
    """The module of a figure id (``fig2_imp_connectivity``)."""
    if figure_id not in FIGURES:
        raise ConfigError(f"unknown figure {figure_id!r}; choose from {', '.join(FIGURES)}")
    return importlib.import_module(f"{__name__}.{figure_id}")


def out_stem(out: str) -> Path:
    """``--out`` without a .pdf/.png extension."""
    path = Path(out)
    return path.with_suffix("") if path.suffix in (".pdf", ".png") else path


def make_figure(figure_id: str, inputs, out, **options) -> list[Path]:
    """Render one figure from result files: writes ``OUT.pdf`` and ``OUT.png`` and returns their paths."""
    from .style import load_inputs

    module = figure_module(figure_id)
    return module.main(load_inputs(inputs), out_stem(str(out)), **options)
