"""The GPU check: one command that, on a machine with one CUDA GPU, in about 8 minutes, runs the GPU
tests, the benchmark ratio, times the paper architectures' trainings as the workflow's jobs run them,
and projects the GPU-hours of ``config/paper.yaml`` from those measured rates.

On the GPU machine, from a copy of this repository (only its own torch is needed, plus the pure-Python
packages in ``.gpu-deps/``, which ``bash benchmarks/gpu_deps.sh`` fills where PyPI is reachable)::

    PYTHONPATH=src:.gpu-deps python benchmarks/gpu_check.py

It prints, in order:

1. the device, torch and CUDA versions;
2. ``tests/test_gpu.py`` (pytest's summary line);
3. the benchmark ratio of ``benchmarks/bench.py`` (standard pipeline vs the fast path, ResNet-20, one run);
4. for each paper architecture, seconds per 1,000 optimizer steps of training as IMP trains (one model,
   ``unmasking.training.train``, eager fp32: what ``unmasking imp``/``train-level`` run when the config
   does not set ``compile``) and as E3/E6 train (``models_at_once`` models at once through
   ``unmasking.multitrain.train_many``, fp32: ``analyses.retraining.train_jobs``), on synthetic
   on-device data of the recipe's shapes and batch size; ResNet-18/50 only where torchvision is installed;
5. the projected GPU-hours of ``config/paper.yaml``: every training of every architecture (IMP's pretraining
   and levels, E3's perturbed and E6's pruned retrainings, counted from the config) at those rates. The
   analyses that do not train (E2, E4, E5, E7, E8, E9) and ImageNet's JPEG decoding are not in it.

``--reduced`` is the CPU smoke mode of the test suite (tests/test_bench.py): a few steps, ResNet-20 only,
so the command cannot rot where no GPU is.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "config" / "paper.yaml"


def _bench():
    """benchmarks/bench.py as a module (a script beside the package)."""
    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def versions(device: torch.device) -> None:
    section("device and versions")
    print(f"torch {torch.__version__}; python {sys.version.split()[0]}; device {device}")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        print(
            f"GPU {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}; CUDA "
            f"{torch.version.cuda}; cuDNN {torch.backends.cudnn.version()}"
        )


def gpu_tests(timeout: int) -> None:
    section("tests/test_gpu.py")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_gpu.py")]
    try:
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"did not finish in {timeout} s")
        return
    lines = (out.stdout + out.stderr).strip().splitlines()
    print("\n".join(lines[-3:]) if out.returncode in (0, 5) else "\n".join(lines[-30:]))


# --- training rates as the workflow's jobs train ----------------------------------------------------------------


def recipe_of(arch: dict):
    from unmasking.foundations.recipes import build_recipe

    return build_recipe(arch["recipe"], None, [f"{k}={v}" for k, v in (arch.get("set") or {}).items()])


def synthetic(recipe, device: torch.device, n: int):
    """On-device uint8 images of the recipe's data shape (CIFAR: 3x32x32; ImageNet: 3x224x224)."""
    from unmasking.data import TensorData
    from unmasking.data.cifar import normalizer, random_crop_flip

    name = recipe.data.name
    side, classes = (224, 1000) if name == "imagenet" else (32, 100 if name == "cifar100" else 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    stats = "cifar100" if name == "cifar100" else "cifar10"  # any normalization: timing only
    aug = random_crop_flip if side == 32 else None
    return TensorData(name, x, y, x[:16], y[:16], classes, augment=aug, normalize=normalizer(stats)).to(device), classes


def seconds_per_1000(recipe, k: int, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per 1,000 optimizer steps of K models (K = 1: ``training.train``; else ``train_many``)."""
    import copy

    from unmasking.models import build_model
    from unmasking.multitrain import train_many
    from unmasking.training import Seeds, train

    hp = copy.copy(recipe.train)
    hp.eval_every = hp.checkpoint_every = 0
    data, classes = synthetic(recipe, device, max(4 * hp.batch_size, 256))
    models = [build_model(recipe.model.name, classes, recipe.model.width, seed=i).to(device) for i in range(k)]
    seeds = [Seeds.from_seed(i) for i in range(k)]

    def run(a: int, b: int) -> None:
        if k == 1:
            train(models[0], None, data, hp, seeds[0], a, b, progress=False)
        else:
            train_many(models, [None] * k, data, hp, seeds, a, b, progress=False)

    run(0, warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(warmup, warmup + steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1000


def measured_rates(archs: list[dict], device: torch.device, args) -> dict[str, dict[int, float | str]]:
    """``{arch: {1: s per 1,000 steps, K: ...}}``; a string where it could not be measured (why)."""
    section("training rates (s per 1,000 optimizer steps, synthetic on-device data, fp32)")
    rates = {}
    for arch in archs:
        recipe = recipe_of(arch)
        k_many = min(arch.get("models_at_once", 1), 2) if args.reduced else arch.get("models_at_once", 1)
        ks = [1] + ([k_many] if k_many > 1 else [])
        # ResNet-20 for `--steps`; the larger networks for fewer (their seconds per step are longer)
        steps = args.steps if arch["recipe"] == "resnet20-cifar10" else max(2, args.steps // 6)
        steps = max(2, args.steps // 200) if recipe.data.name == "imagenet" else steps
        rates[arch["name"]] = {}
        for k in ks:
            label = "IMP: training.train, 1 model" if k == 1 else f"E3/E6: train_many, K={k}"
            try:
                rate: float | str = seconds_per_1000(recipe, k, device, args.warmup, steps)
                shown = f"{rate:9.1f} s  ({steps} timed steps of batch {recipe.train.batch_size})"
            except ImportError as e:  # torchvision's ResNet-18/50
                rate = shown = f"not measured: {e}"
            except torch.cuda.OutOfMemoryError:
                rate = shown = "not measured: out of GPU memory"
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rates[arch["name"]][k] = rate
            print(f"{arch['name']:>9} {label:<34} {shown}", flush=True)
    return rates


# --- the projection ---------------------------------------------------------------------------------------------


def _levels(spec, levels: int) -> int:
    return levels + 1 if spec == "all" else len(spec)


def paper_trainings(cfg: dict, arch: dict, total_steps: int) -> dict[str, tuple[int, int, int]]:
    """``{what: (trainings, optimizer steps, models at once)}`` of one architecture of a workflow config:
    IMP's pretraining (t steps) and levels (T - t each), E3's and E6's retrainings (T - t each)."""
    name, levels = arch["name"], int(arch["levels"])
    exps = cfg.get("experiments", {})
    rewinds = list(arch["rewind_steps"])

    def runs(section: dict | None) -> list[tuple[int, int]]:
        seeds = (section or {}).get("seeds") or cfg["seeds"]
        return [(t, s) for t in rewinds for s in seeds]

    def steps_of(per_run: int, section: dict | None = None) -> tuple[int, int]:
        rs = runs(section)
        return per_run * len(rs), per_run * sum(total_steps - t for t, _ in rs)

    k = int(arch.get("models_at_once", 1))
    out = {
        "IMP pretraining": (len(runs(None)), sum(t for t, _ in runs(None)), 1),
        "IMP levels": (*steps_of(levels + 1), 1),
    }
    pert = exps.get("perturbation")
    if pert and pert.get("enabled", True) and name in (pert.get("architectures") or [name]):
        per_run = len(pert["strengths"]) * int(pert["replicates"]) * _levels(pert["levels"], levels)
        out["E3 perturbation"] = (*steps_of(per_run, pert), k)
    ratio = exps.get("pruning_ratio")
    if ratio and ratio.get("enabled", True) and name in (ratio.get("architectures") or [name]):
        methods = ratio.get("methods", ["magnitude", "random"])
        per_fraction = sum(1 if m == "magnitude" else int(ratio.get("random_masks", 1)) for m in methods)
        per_run = int(ratio.get("bisection_steps", 4)) * per_fraction * _levels(ratio["levels"], levels)
        out["E6 pruning ratio"] = (*steps_of(per_run, ratio), k)
    return out


def projection(cfg: dict, rates: dict[str, dict[int, float | str]]) -> None:
    section(f"projected GPU-hours of {PAPER_CONFIG.relative_to(REPO)} (trainings only, at the rates above)")
    total, missing = 0.0, []
    for arch in cfg["architectures"]:
        recipe = recipe_of(arch)
        for what, (n, steps, k) in paper_trainings(cfg, arch, recipe.train.steps).items():
            rate = rates.get(arch["name"], {}).get(k)
            if not isinstance(rate, float):
                missing.append(f"{arch['name']} {what}")
                print(f"{arch['name']:>9} {what:<17} {n:6d} trainings {steps / 1e6:9.1f} M steps   (rate not measured)")
                continue
            hours = steps / k * rate / 1000 / 3600
            total += hours
            print(
                f"{arch['name']:>9} {what:<17} {n:6d} trainings {steps / 1e6:9.1f} M steps  K={k}  {hours:10.1f} GPU-h"
            )
    print(f"total {total:.0f} GPU-hours" + (f"; not counted (no rate): {', '.join(missing)}" if missing else ""))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--reduced", action="store_true", help="CPU smoke mode: a few steps, ResNet-20 only, K <= 2")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed ResNet-20 steps per rate (default 2000; reduced: 2); VGG-16 "
        "and ResNet-18 a sixth of it, ResNet-50 a 200th",
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 30; reduced: 1)")
    p.add_argument("--skip-tests", action="store_true", help="do not run tests/test_gpu.py")
    p.add_argument("--skip-bench", action="store_true", help="do not run the benchmark ratio")
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.reduced else 2000)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.reduced else 30)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.reduced:
        raise SystemExit(
            "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); --reduced runs the CPU smoke"
        )
    import yaml

    cfg = yaml.safe_load(PAPER_CONFIG.read_text())
    started = time.perf_counter()
    versions(device)
    if not args.skip_tests:
        gpu_tests(timeout=240)
    if not args.skip_bench:
        section("benchmark ratio: benchmarks/bench.py resnet20 (standard pipeline vs the fast path, one run)")
        bench = ["resnet20", "--skip-hvp", "--skip-barrier"]
        if args.reduced:
            bench += ["--ks", "2", "--steps", "2", "--warmup", "1", "--images", "512", "--workers", "0"]
        else:
            bench += ["--ks", "8", "--steps", "200", "--warmup", "20", "--images", "20000"]
        if importlib.util.find_spec("torchvision") is None:  # the standard pipeline is torchvision's
            print("torchvision is not installed here: the standard pipeline (a) is skipped, so no ratio")
            bench.append("--skip-standard")
        _bench().main(bench)
    archs = cfg["architectures"][:1] if args.reduced else cfg["architectures"]
    rates = measured_rates(archs, device, args)
    projection(cfg, rates)
    print(f"\ngpu_check: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
