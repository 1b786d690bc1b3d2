"""The paper's figures (SPEC §4): one module per figure, each a function ``plot`` from aggregated datasets
to a matplotlib figure, sharing :mod:`unmasking.figures.style`; the data they show is selected by
:mod:`unmasking.metrics`.

Figure ids and their train-error variants come from :data:`unmasking.foundations.registry.FIGURES`.
:func:`make_figure` renders one figure from result files (what ``unmasking figure`` runs).
matplotlib and xarray are imported only when a figure is drawn, so that building the command line
parser stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..foundations.hparams import ConfigError
from ..foundations.registry import EXPERIMENTS, FIGURES

ERRORS = ("test", "train")  # the error a figure shows: test, or train for a figure's train variant


def splits(figure_id: str) -> tuple[str, ...]:
    """The errors a figure is drawn from: test, and train where the registry gives it a train variant."""
    return ERRORS if FIGURES[figure_id].train_variant else ERRORS[:1]


def figure_module(figure_id: str):
    """The module of a figure id (``fig2_imp_connectivity``)."""
    if figure_id not in FIGURES:
        raise ConfigError(f"unknown figure {figure_id!r}; choose from {', '.join(FIGURES)}")
    return importlib.import_module(f"{__name__}.{figure_id}")


def out_stem(out: str | Path) -> Path:
    """An output path without a .pdf/.png extension."""
    path = Path(out)
    return path.with_suffix("") if path.suffix in (".pdf", ".png") else path


def render(plot: Callable, datasets: Mapping, out: str | Path, **options) -> list[Path]:
    """Call a figure's ``plot`` with the datasets and options it takes, and write ``out``.pdf/.png.

    Datasets are passed by experiment name (``imp=…``); a plot parameter named after an
    experiment without a default is required.  Options set to None are left at their defaults.
    """
    from . import style

    kwargs = {}
    for name, param in inspect.signature(plot).parameters.items():
        if name in EXPERIMENTS:
            if name in datasets:
                kwargs[name] = datasets[name]
            elif param.default is inspect.Parameter.empty:
                raise ConfigError(f"{plot.__module__.rsplit('.', 1)[-1]} needs the {name} results "
                                  f"(results/<config>/<arch>/{name}.nc) among the inputs")
        elif options.get(name) is not None:
            kwargs[name] = options[name]
    return style.save(plot(**kwargs), out)


def make_figure(
    figure_id: str, inputs: Iterable[str | Path], out: str | Path, config_name: str | None = None, **options
) -> list[Path]:
    """Render one figure from result files into ``out``.pdf and ``out``.png (an extension of ``out`` is
    dropped); ``options`` are the figure's keyword options (``split``, ``levels``, ``rewind_step``, …).
    Aggregates of another workflow configuration (``config_name``) or architecture (``arch``) are refused."""
    from ..metrics.inputs import load_inputs

    module = figure_module(figure_id)
    datasets = load_inputs(inputs, config_name, options.get("arch"))
    return render(module.plot, datasets, out_stem(out), **options)
