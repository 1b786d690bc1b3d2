"""The figures (SPEC §4): every figure renders (PDF and PNG) from datasets with the real schema.

The datasets come from the real pipeline at toy size: two tiny IMP runs (seeds 0 and 1), every
analysis E2–E9 run on them by its library function, and the per-run files combined by the
workflow's own aggregation script, exactly as `results/<config>/<arch>/<experiment>.nc`.
The plotted numbers are checked against independent computations from those datasets.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import xarray as xr

from unmasking.analyses.flatness import flatness
from unmasking.analyses.hessian import HessianSettings, hessian_study
from unmasking.analyses.interpolation import successive_levels
from unmasking.analyses.landscape import landscape_run
from unmasking.analyses.perturbation import perturbation_robustness
from unmasking.analyses.pruning_ratio import pruning_ratio
from unmasking.analyses.pruning_theory import pruning_theory
from unmasking.analyses.small_weights import small_weights_run
from unmasking.commands import main as cli_main
from unmasking.figures import figure_module, make_figure, splits
from unmasking.figures import style as S
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.netcdf import write_dataset
from unmasking.foundations.recipes import build_recipe
from unmasking.foundations.registry import EXPERIMENTS, FIGURES
from unmasking.imp import ImpRun
from unmasking.metrics.inputs import experiment_of, load_inputs
from unmasking.metrics.levels import pick_levels
from unmasking.metrics.statistics import spread

from conftest import teacher_data

REPO = Path(__file__).resolve().parents[1]
LEVELS = 3
REWIND = 5


def run_experiments(run: ImpRun) -> dict[str, xr.Dataset]:
    """Every experiment on one tiny run, through the analyses' library functions."""
    levels = list(range(LEVELS + 1))
    hs = HessianSettings(topk=3, lanczos_steps=8, probes=2, hutchinson_probes=2, grid_points=50)
    hessian = hessian_study(run, levels, hs, progress=False)
    return {
        "imp": run.summary(LEVELS),
        "interpolation": successive_levels(run, levels, gammas=5, progress=False),
        "perturbation": perturbation_robustness(run, [1, 2], strengths=[0, 1], replicates=1, gammas=3, progress=False),
        "hessian": hessian,
        "pruning_theory": pruning_theory(run, hessian, progress=False),
        "pruning_ratio": pruning_ratio(
            run, [1, 2], bisection_steps=2, methods=("magnitude", "random"), gammas=3, progress=False
        ),
        "flatness": flatness(
            run, levels, random_masks=2, settings=HessianSettings(lanczos_steps=4, hutchinson_probes=2), progress=False
        ),
        "small_weights": small_weights_run(run, levels),
        "landscape": landscape_run(run, [0, 2], grid=5, splits=("test", "train")),
    }


def load_aggregate_script():
    spec = importlib.util.spec_from_file_location("aggregate_script", REPO / "workflow" / "scripts" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """Aggregated results of two tiny runs: {experiment: results/toy/cnn/<experiment>.nc}."""
    root = tmp_path_factory.mktemp("results") / "toy" / "cnn"
    recipe = build_recipe(
        "mnist1d-cnn",
        None,
        [
            "model.width=4",
            "train.steps=30",
            "train.milestones=[20]",
            "train.batch_size=20",
            f"prune.rewind_step={REWIND}",
            f"prune.levels={LEVELS}",
        ],
    )
    per_run: dict[str, list[Path]] = {}
    for seed in (0, 1):
        base = root / f"rewind_{REWIND}" / f"seed_{seed}"
        run = ImpRun(recipe, seed, base / "run", device="cpu", progress=False)
        run.data = teacher_data()
        run.run(LEVELS)
        for exp, ds in run_experiments(run).items():
            per_run.setdefault(exp, []).append(write_dataset(ds, base / f"{exp}.nc"))
    agg = load_aggregate_script()
    out = {}
    for exp, paths in per_run.items():
        ds = agg.aggregate([str(p) for p in paths], [REWIND] * len(paths), "cnn", exp, "toy")
        out[exp] = write_dataset(ds, root / f"{exp}.nc")
    return out


@pytest.fixture(autouse=True)
def low_resolution(monkeypatch):
    """PNGs at 100 dpi: what is tested does not depend on the resolution, and it is faster."""
    monkeypatch.setattr(S, "PNG_DPI", 100)


@pytest.fixture(scope="module")
def datasets(results) -> dict[str, xr.Dataset]:
    return load_inputs(results.values())


def check_outputs(paths: list[Path]) -> None:
    pdf, png = sorted(paths, key=lambda p: p.suffix)
    assert pdf.suffix == ".pdf" and pdf.read_bytes()[:5] == b"%PDF-"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not blank


@pytest.mark.parametrize("figure_id", FIGURES)
def test_every_figure_and_variant_renders(figure_id, results, tmp_path):
    module = figure_module(figure_id)
    for split in module.SPLITS:
        stem = tmp_path / "figures" / f"{figure_id}_{split}"
        check_outputs(make_figure(figure_id, results.values(), stem, split=split))


def test_loading_names_experiments_from_attributes(results, datasets):
    assert set(datasets) == set(results) == set(EXPERIMENTS)
    for exp, ds in datasets.items():
        assert ds.sizes["arch"] == 1 and ds.sizes["rewind_step"] == 1, exp
        assert list(ds.seed.values) == [0, 1], exp
    single = load_inputs([results["imp"].parent / f"rewind_{REWIND}" / "seed_1" / "small_weights.nc"])
    assert experiment_of(single["small_weights"]) == "small_weights"
    assert single["small_weights"].rewind_step.values.tolist() == [REWIND]


def test_fig2_plots_seed_means_at_imp_densities(datasets):
    fig = figure_module("fig2_imp_connectivity").plot(imp=datasets["imp"], interpolation=datasets["interpolation"])
    imp = datasets["imp"].isel(arch=0, rewind_step=0)
    top, bottom = fig.axes[0], fig.axes[1]
    line = next(ln for ln in top.get_lines() if ln.get_label() == "IMP solution w_L")
    np.testing.assert_allclose(line.get_xdata(), 100 * imp.density.mean("seed").values)
    np.testing.assert_allclose(line.get_ydata(), 100 * imp.test_error.mean("seed").values)
    barrier = next(ln for ln in bottom.get_lines() if ln.get_label().startswith("B(w_L"))
    e2 = datasets["interpolation"].isel(arch=0, rewind_step=0)
    expected = e2.barrier_error.sel(pair="successive", split="test", bn_mode="interpolate").mean("seed")
    np.testing.assert_allclose(barrier.get_ydata(), 100 * expected.values[:LEVELS])  # pairs (L, L+1), L < LEVELS
    np.testing.assert_allclose(barrier.get_xdata(), 100 * imp.density.mean("seed").values[1:])
    assert top.get_xscale() == "log" and top.xaxis_inverted()
    S.plt.close(fig)


def test_fig4_pools_seeds_and_replicates(datasets):
    fig = figure_module("fig4_robustness").plot(
        perturbation=datasets["perturbation"], imp=datasets["imp"], split="train"
    )
    e3 = datasets["perturbation"].isel(arch=0, rewind_step=0)
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "c = 0 (SGD noise)")
    expected = e3.barrier_error.sel(strength=0.0, split="train").mean(("seed", "replicate"))
    np.testing.assert_allclose(line.get_ydata(), 100 * expected.values)
    S.plt.close(fig)


def test_fig8_overlap_and_threshold_lines(datasets):
    fig = figure_module("fig8_small_weights").plot(small_weights=datasets["small_weights"], imp=datasets["imp"])
    e8 = datasets["small_weights"].isel(arch=0, rewind_step=0)
    overlap = next(ln for ln in fig.axes[2].get_lines() if ln.get_label().startswith("pruned at L+1"))
    np.testing.assert_allclose(overlap.get_ydata(), e8.overlap.mean("seed").values, equal_nan=True)
    thresholds = sorted(
        ln.get_xdata()[0] for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata()) == 2
    )
    np.testing.assert_allclose(thresholds, sorted(e8.next_threshold.mean("seed").values))
    S.plt.close(fig)


def test_several_rewind_steps(datasets, tmp_path):
    """fig2 gets a column per rewind step; the others show the largest unless told otherwise."""

    def with_second_step(ds):
        other = ds.assign_coords(rewind_step=[0])
        return xr.concat([other, ds], dim="rewind_step", data_vars="minimal", coords="minimal", compat="override")

    two = {k: with_second_step(v) for k, v in datasets.items()}
    fig = figure_module("fig2_imp_connectivity").plot(imp=two["imp"], interpolation=two["interpolation"])
    assert len(fig.axes) == 4 and "rewind step t = 0" in fig.axes[0].get_title()
    S.plt.close(fig)
    fig = figure_module("fig3_interpolation").plot(interpolation=two["interpolation"], imp=two["imp"])
    assert f"t = {REWIND}" in fig._suptitle.get_text()
    S.plt.close(fig)
    fig = figure_module("fig3_interpolation").plot(interpolation=two["interpolation"], rewind_step=0)
    assert "t = 0" in fig._suptitle.get_text()
    S.plt.close(fig)
    with pytest.raises(ConfigError, match="rewind step 7"):
        figure_module("fig5_hessian").plot(hessian=two["hessian"], imp=two["imp"], rewind_step=7)


def test_shading_spans_follow_flags():
    fig = S.new_figure(3, 2)
    ax = fig.subplots()
    pct = [100, 80, 64, 51.2, 40.96]
    S.shade_levels(ax, pct, [True, True, False, True, False])
    spans = sorted(tuple(sorted((p.get_x(), p.get_x() + p.get_width()))) for p in ax.patches)
    np.testing.assert_allclose(spans, [(np.sqrt(51.2 * 40.96), np.sqrt(64 * 51.2)), (np.sqrt(80 * 64), 115.0)])
    S.plt.close(fig)


def test_spread_and_level_picking():
    mean, std, n = spread([[1.0, np.nan], [3.0, np.nan], [5.0, 2.0]], axis=0)
    np.testing.assert_allclose(mean, [3.0, 2.0])
    np.testing.assert_allclose(std, [2.0, 0.0])
    assert n.tolist() == [3, 1]
    assert pick_levels(range(21), 5) == [0, 5, 10, 15, 20]
    assert pick_levels([0, 1, 2], 5) == [0, 1, 2]
    with pytest.raises(ConfigError, match="not in the data"):
        pick_levels([0, 1, 2], 5, [4])


def test_missing_inputs_and_bad_options_are_clean_errors(results, tmp_path, capsys):
    out = str(tmp_path / "f")
    assert cli_main(["figure", "fig2_imp_connectivity", "--inputs", str(results["imp"]), "--out", out]) == 2
    assert "needs the interpolation results" in capsys.readouterr().err
    assert (
        cli_main(["figure", "fig5_hessian", "--split", "train", "--inputs", *map(str, results.values()), "--out", out])
        == 2
    )
    assert "no train variant" in capsys.readouterr().err
    assert (
        cli_main(
            ["figure", "fig8_small_weights", "--arch", "vgg", "--inputs", str(results["small_weights"]), "--out", out]
        )
        == 2
    )
    assert "'vgg' is not in the inputs" in capsys.readouterr().err
    assert (
        cli_main(["figure", "fig1_landscape", "--seed", "5", "--inputs", str(results["landscape"]), "--out", out]) == 2
    )
    assert "seed 5 has no landscape results" in capsys.readouterr().err


def test_cli_writes_pdf_and_png(results, tmp_path, capsys):
    out = tmp_path / "figs" / "fig7_flat_directions.pdf"  # an extension is dropped
    assert (
        cli_main(
            [
                "figure",
                "fig7_flat_directions",
                "--inputs",
                str(results["flatness"]),
                str(results["imp"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "fig7_flat_directions.pdf" in printed and "fig7_flat_directions.png" in printed
    check_outputs([out, out.with_suffix(".png")])


def test_workflow_plans_the_figures_and_the_claims(tmp_path):
    """A dry run of config/test.yaml (with E9's train split and without E3): one job per figure and variant
    whose experiments ran, and the claims job, all built by `rule all`."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    overlay = {"experiments": {"landscape": {"splits": ["test", "train"]}, "perturbation": {"enabled": False}}}
    (work / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "--workflow-profile",
            "workflow/profiles/default",
            "--cores",
            "1",
            "-n",
            "--configfile",
            "config/test.yaml",
            "overlay.yaml",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "UNMASKING_DATA": str(tmp_path / "data")},
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    table = out.stdout.split("Job stats:")[1].split("\n\n")[0]
    counts = dict(line.split() for line in table.splitlines()[3:] if len(line.split()) == 2)
    expected = {f for f in FIGURES if f != "fig4_robustness"} | {
        "fig1_landscape_train",
        "fig2_imp_connectivity_train",
        "fig3_interpolation_train",
        "fig6_pruning_ratio_train",
        "claims",
    }
    assert {k for k in counts if k.startswith("fig") or k == "claims"} == expected
    assert all(counts[k] == "1" for k in expected)
    assert "figures/test/cnn/fig1_landscape_train.png" in out.stdout and "figures/test/claims.md" in out.stdout


def test_figure_and_claims_commands_do_not_import_torch():
    """The workflow runs one plotting process per figure: they must not pay torch's import."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom unmasking.commands import main\n"
        "for cmd in ('figure', 'claims'):\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "from unmasking.commands import build_parser\nbuild_parser()\nassert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_log_spaced_ticks_keep_labels_apart():
    """Uneven levels (E4 at 0, 4, 8, 10, …) must not crowd the % axis; even IMP levels thin evenly."""
    from unmasking.figures.style import log_spaced_ticks

    uneven = [100, 41, 16.8, 10.7, 6.86, 4.38, 2.79, 1.14]
    ticks = log_spaced_ticks(uneven, max_ticks=8)
    assert ticks.tolist() == [100, 41, 16.8, 6.86, 2.79, 1.14]
    assert np.all(np.diff(np.log10(ticks)) <= -np.log10(100 / 1.14) / 7 * 0.999)
    even = [100 * 0.8**level for level in range(21)]
    np.testing.assert_allclose(log_spaced_ticks(even, max_ticks=8), even[::3])


def test_figure_splits_follow_the_registry():
    """A figure has a train-error variant exactly where the registry gives it one; fig1 has one where E9
    evaluated the train split (the data decides, so the registry gives it none)."""
    for figure_id, figure in FIGURES.items():
        module = figure_module(figure_id)
        assert module.ID == figure_id
        if figure_id == "fig1_landscape":
            assert module.SPLITS == ("test", "train") and not figure.train_variant
        else:
            assert module.SPLITS == splits(figure_id) == (("test", "train") if figure.train_variant else ("test",))
    with pytest.raises(ConfigError, match="unknown figure 'fig9'"):
        figure_module("fig9")


def test_figure_modules_do_not_import_torch():
    """Every figure module, with its style and the metrics it reads, imports without torch."""
    import subprocess
    import sys

    code = (
        "import importlib, sys\n"
        f"for name in {list(FIGURES)!r}:\n"
        "    importlib.import_module('unmasking.figures.' + name)\n"
        "assert 'matplotlib' in sys.modules\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
