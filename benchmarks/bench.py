"""Throughput benchmark: the standard training pipeline versus the fast path, with projections.

``python benchmarks/bench.py`` (ResNet-20, CIFAR-shaped synthetic data) measures, in one run:

(a) the standard pipeline: a ``DataLoader`` over a ``torchvision.datasets``-like data set of PIL
    images with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
    ``Normalize``; one model, eager fp32, ``torch.optim.SGD``;
(b) the fast path: the data set resident on the device as uint8 (``TensorData.to(device)``),
    crop + flip + normalization on the device, :func:`~unmasking.multitrain.train_many` with K
    models at once (bf16 autocast and channels-last on CUDA, ``torch.compile`` with ``--compile``);

and prints steps per second, model-steps per second, the ratio (b)/(a), the projected wall
time of one 62,400-step training and of the whole paper configuration, Hessian-vector
products per second (``torch.func`` jvp over grad, batch 1,000, fp32) and seconds per barrier
curve (11 γ points × 10,000 test images, fp32).

``python benchmarks/bench.py embedded`` measures model-steps per second of
:func:`~unmasking.training.train` (one model) and :func:`~unmasking.multitrain.train_many`
(K models, each backend) on the embedded mnist1d recipes, per torch thread count.

A script beside the package, not part of it: it uses only ``unmasking``'s public modules, and counts
the paper configuration's trainings in ``config/paper.yaml`` of this repository (``--config``), wherever
it is run from.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F

from unmasking.data import TensorData, load_data
from unmasking.data.cifar import STATS, normalizer, random_crop_flip
from unmasking.foundations.hparams import TrainHparams
from unmasking.foundations.recipes import get_recipe
from unmasking.models import build_model
from unmasking.multitrain import train_many
from unmasking.training import Seeds, evaluate, train

GAMMAS = 11
PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"  # this repository's, not the cwd's


class _Clock:
    """Wall and process-CPU seconds of a block; synchronizes CUDA at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        self._sync()
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _header(device: torch.device) -> str:
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({_cpu_name()})"
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (
        f"device {device} = {dev}; torch {torch.__version__}; torch threads {torch.get_num_threads()}; "
        f"{os.cpu_count()} CPU cores{load}"
    )


# --------------------------------------------------------------------------------------------
# Synthetic CIFAR-shaped data, in the standard (PIL) and fast (tensor) forms.


def synthetic_cifar(n_train: int, n_test: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random uint8 images (N, 3, 32, 32) and labels: the CIFAR-10 shapes, for timing only."""
    g = torch.Generator().manual_seed(seed)
    x_train = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
    x_test = torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    return x_train, torch.randint(0, 10, (n_train,), generator=g), x_test, torch.randint(0, 10, (n_test,), generator=g)


class PILImages(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: HWC uint8 array → PIL image → transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.data = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def standard_pipeline_rate(
    x: torch.Tensor, y: torch.Tensor, hp: TrainHparams, device: torch.device, warmup: int, steps: int, workers: int
) -> float:
    """Steps per second of the textbook loop: DataLoader + torchvision transforms, one eager fp32 model."""
    from torchvision import transforms as T

    mean, std = STATS["cifar10"]
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(
        PILImages(x, y, tf),
        batch_size=hp.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    model = build_model("resnet20", 10, seed=0).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def batches():
        while True:
            yield from loader

    it = batches()

    def run(n: int) -> None:
        for _ in range(n):
            xb, yb = next(it)
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(warmup)
    with _Clock(device) as c:
        run(steps)
    return steps / c.wall


def fast_path_rate(
    data: TensorData,
    k: int,
    hp: TrainHparams,
    device: torch.device,
    warmup: int,
    steps: int,
    backend: str,
    bf16: bool,
    channels_last: bool,
    compile: bool,
) -> tuple[float, float]:
    """Steps per second of :func:`train_many` with K ResNet-20s, and the warm-up seconds (compilation)."""
    models = [build_model("resnet20", 10, seed=i).to(device) for i in range(k)]
    seeds = [Seeds.from_seed(i) for i in range(k)]
    kw = dict(progress=False, backend=backend, bf16=bf16, channels_last=channels_last, compile=compile)
    with _Clock(device) as w:
        train_many(models, [None] * k, data, hp, seeds, 0, warmup, **kw)
    with _Clock(device) as c:
        train_many(models, [None] * k, data, hp, seeds, warmup, warmup + steps, **kw)
    return steps / c.wall, w.wall


# --------------------------------------------------------------------------------------------
# Analysis kernels: Hessian-vector products and barrier curves.


def hvp_rate(data: TensorData, device: torch.device, batch: int, reps: int) -> float:
    """Hessian-vector products per second of the mean cross-entropy of ResNet-20 (eval-mode BN, fp32)."""
    from torch.func import functional_call, grad, jvp

    model = build_model("resnet20", 10, seed=0).to(device).eval()
    x, y = data.subset("test", batch, seed=0)
    x, y = x.to(device), y.to(device)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}

    def loss(p):
        return F.cross_entropy(functional_call(model, (p, buffers), (x,)), y)

    g = torch.Generator().manual_seed(0)
    v = {n: torch.randn(p.shape, generator=g).to(device) for n, p in params.items()}

    def hvp():
        return jvp(grad(loss), (params,), (v,))[1]

    hvp()
    with _Clock(device) as c:
        for _ in range(reps):
            hvp()
    return reps / c.wall


def barrier_curve_seconds(data: TensorData, device: torch.device, eval_batch: int) -> float:
    """Seconds for one error-vs-γ curve: 11 interpolated ResNet-20s, each evaluated on the test split."""
    a = build_model("resnet20", 10, seed=0).to(device)
    b = build_model("resnet20", 10, seed=1).to(device)
    net = copy.deepcopy(a)
    sa, sb = a.state_dict(), b.state_dict()
    evaluate(net, data, "test", eval_batch)
    with _Clock(device) as c:
        for gamma in torch.linspace(0, 1, GAMMAS).tolist():
            net.load_state_dict({n: torch.lerp(t, sb[n], gamma) if t.is_floating_point() else t for n, t in sa.items()})
            evaluate(net, data, "test", eval_batch)
    return c.wall


# --------------------------------------------------------------------------------------------


def _assumed_trainings(args, total_steps: int) -> tuple[int, int, str]:
    e1 = args.seeds * args.rewinds * args.levels
    e3 = args.seeds * args.rewinds * args.strengths * args.replicates * args.levels
    e6 = args.seeds * args.rewinds * args.bisection_steps * args.methods * args.e6_levels
    n = e1 + e3 + e6
    note = (
        f"assumed (--seeds/--rewinds/...): {args.seeds} seeds x {args.rewinds} rewind steps; "
        f"E1 IMP x {args.levels} "
        f"levels = {e1}; E3 x {args.strengths} strengths x {args.replicates} replicates x {args.levels} levels = "
        f"{e3}; E6 x {args.bisection_steps} bisection steps x {args.methods} methods x {args.e6_levels} levels = {e6}; "
        f"total {n} trainings of {total_steps:,} steps"
    )
    return n, n * total_steps, note


def _levels(spec, levels: int) -> int:
    return levels + 1 if spec == "all" else len(spec)


def paper_trainings(args, total_steps: int, config: Path = PAPER_CONFIG) -> tuple[int, int, str]:
    """ResNet-20 trainings of the paper configuration: (count, total optimizer steps, how counted).

    Read from ``config/paper.yaml`` when it exists and has the expected keys (each training runs
    ``T - t`` steps from its rewind step ``t``), else from the assumption in the flags.
    """
    if args.trainings:
        return args.trainings, args.trainings * total_steps, f"{args.trainings} trainings (--trainings)"
    if not config.exists():
        return _assumed_trainings(args, total_steps)
    import yaml

    try:
        cfg = yaml.safe_load(config.read_text())
        arch = next(a for a in cfg["architectures"] if a["name"] == "resnet20")
        seeds, rewinds, levels = len(cfg["seeds"]), list(arch["rewind_steps"]), int(arch["levels"])
        exps = cfg.get("experiments", {})
        per_level = {"E1 IMP": (1, levels + 1)}
        pert = exps.get("perturbation")
        if pert and "resnet20" in pert.get("architectures", ["resnet20"]):
            per_level["E3 perturbation"] = (
                len(pert["strengths"]) * int(pert["replicates"]),
                _levels(pert["levels"], levels),
            )
        ratio = exps.get("pruning_ratio")
        if ratio and "resnet20" in ratio.get("architectures", ["resnet20"]):
            methods = ratio["methods"]
            per_fraction = sum(1 if m == "magnitude" else int(ratio.get("random_masks", 1)) for m in methods)
            per_level["E6 pruning ratio"] = (
                int(ratio.get("bisection_steps", 4)) * per_fraction,
                _levels(ratio["levels"], levels),
            )
    except (KeyError, TypeError, ValueError, StopIteration, yaml.YAMLError) as e:
        n, steps, note = _assumed_trainings(args, total_steps)
        return n, steps, f"{note} ({config} not understood: {type(e).__name__} {e})"
    per_run = sum(a * b for a, b in per_level.values())
    n = seeds * len(rewinds) * per_run
    steps = seeds * per_run * sum(total_steps - t for t in rewinds)
    parts = "; ".join(f"{k} {a} x {b} levels" for k, (a, b) in per_level.items())
    note = (
        f"from {config}: resnet20, {seeds} seeds x {len(rewinds)} rewind steps {rewinds}, per run: {parts} = "
        f"{per_run} trainings; total {n} trainings, {steps:,} optimizer steps (T - t each)"
    )
    return n, steps, note


def _fmt_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def run_resnet20(args) -> None:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    bf16 = cuda and not args.no_bf16 and args.backend != "vmap"  # bf16 needs the stacked backend
    if cuda:
        torch.backends.cudnn.benchmark = True  # both pipelines: fastest convolution algorithms for fixed shapes
    channels_last = cuda and not args.no_channels_last
    recipe = get_recipe("resnet20-cifar10")
    hp = copy.copy(recipe.train)
    hp.eval_every = hp.checkpoint_every = 0
    total_steps = hp.steps
    _, paper_steps, note = paper_trainings(args, total_steps, Path(args.config))
    label = "CUDA" if cuda else "CPU"
    print(f"== ResNet-20 / CIFAR-shaped synthetic data ({args.images} train images), {label} ==")
    print(_header(device))
    print(f"timed steps {args.steps} after {args.warmup} warm-up steps; batch {hp.batch_size}")
    print(f"paper configuration: {note}")

    x_train, y_train, x_test, y_test = synthetic_cifar(args.images, args.eval_images)
    rows = []
    if not args.skip_standard:
        workers = args.workers if args.workers is not None else min(8, max(1, (os.cpu_count() or 2) // 2))
        rate = standard_pipeline_rate(x_train, y_train, hp, device, args.warmup, args.steps, workers)
        rows.append((f"(a) standard: DataLoader({workers} workers)+PIL transforms, eager fp32, 1 model", 1, rate))
    data = TensorData(
        "cifar10", x_train, y_train, x_test, y_test, 10, augment=random_crop_flip, normalize=normalizer("cifar10")
    ).to(device)
    opts = "+".join(o for o, on in (("bf16", bf16), ("channels_last", channels_last), ("compile", args.compile)) if on)
    for k in args.ks:
        rate, warm = fast_path_rate(
            data, k, hp, device, args.warmup, args.steps, args.backend, bf16, channels_last, args.compile
        )
        rows.append(
            (
                f"(b) fast: on-device data, train_many backend={args.backend} {opts or 'fp32'}, K={k} "
                f"(warm-up {warm:.1f} s)",
                k,
                rate,
            )
        )

    base = rows[0][2] if not args.skip_standard else None
    print(
        f"\n{'pipeline':<96} {'steps/s':>8} {'model-steps/s':>14} {'vs (a)':>7} {'1 training':>11} {'paper config':>13}"
    )
    for name, k, rate in rows:
        model_rate = k * rate
        one = total_steps / rate
        paper = paper_steps / model_rate
        ratio = f"{model_rate / base:.2f}x" if base else "-"
        print(f"{name:<96} {rate:>8.2f} {model_rate:>14.2f} {ratio:>7} {_fmt_time(one):>11} {_fmt_time(paper):>13}")
    print(
        "  '1 training': wall time of one 62,400-step run (K models finish together in that time); "
        "'paper config': all trainings, K at a time, one device"
    )

    if not args.skip_hvp:
        rate = hvp_rate(data, device, args.hvp_batch, args.hvp_reps)
        print(
            f"\nHessian-vector products/s (ResNet-20, batch {args.hvp_batch}, fp32, jvp over grad): {rate:.3f} "
            f"[{label}]"
        )
    if not args.skip_barrier:
        eval_batch = args.eval_batch or (5000 if cuda else 1000)
        seconds = barrier_curve_seconds(data, device, eval_batch)
        per_10k = seconds * 10_000 / args.eval_images
        print(
            f"barrier curve ({GAMMAS} gamma points x {args.eval_images} test images, eval batch {eval_batch}, "
            f"fp32): {seconds:.2f} s measured = {per_10k:.2f} s per curve on 10,000 images [{label}]"
        )


# --------------------------------------------------------------------------------------------


def run_embedded(args) -> None:
    device = torch.device("cpu")
    print("== embedded mnist1d recipes: model-steps/s, training.train (1 model) vs train_many (K models), CPU ==")
    for name in args.recipes:
        recipe = get_recipe(name)
        data = load_data(recipe.data)
        hp = recipe.train
        for threads in args.threads_list:
            torch.set_num_threads(threads)
            print(f"\n{name} (model {recipe.model.name}, batch {hp.batch_size}); {_header(device)}")
            print(f"  {'method':<34} {'model-steps/s':>14} {'per CPU-second':>15} {'s per 1,200-step training':>26}")

            def report(label: str, k: int, clock: _Clock) -> None:
                rate = k * args.steps / clock.wall
                print(f"  {label:<34} {rate:>14.0f} {k * args.steps / clock.cpu:>15.0f} {hp.steps / rate:>26.2f}")

            model = build_model(recipe.model.name, 10, recipe.model.width, seed=0)
            seeds = Seeds.from_seed(0)
            train(model, None, data, hp, seeds, 0, args.warmup, progress=False)
            with _Clock(device) as c:
                train(model, None, data, hp, seeds, args.warmup, args.warmup + args.steps, progress=False)
            report("training.train (K=1)", 1, c)
            for backend in args.backends:
                for compile in [False, True] if args.compile and backend == "stacked" else [False]:
                    for k in args.ks:
                        models = [build_model(recipe.model.name, 10, recipe.model.width, seed=i) for i in range(k)]
                        sl = [Seeds.from_seed(i) for i in range(k)]
                        kw = dict(progress=False, backend=backend, compile=compile)
                        with _Clock(device) as w:
                            train_many(models, [None] * k, data, hp, sl, 0, args.warmup, **kw)
                        with _Clock(device) as c:
                            train_many(models, [None] * k, data, hp, sl, args.warmup, args.warmup + args.steps, **kw)
                        extra = f" (+compile, warm-up {w.wall:.0f} s)" if compile else ""
                        report(f"train_many {backend} K={k}{extra}", k, c)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", default="resnet20", choices=["resnet20", "embedded"])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 200 for resnet20, 300 embedded)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (oneDNN/cuDNN set-up, compilation)")
    p.add_argument("--ks", type=_ints, default=[1, 4, 8, 16], help="numbers of models trained at once, e.g. 1,4,8,16")
    p.add_argument(
        "--backend", default="auto", choices=["auto", "stacked", "vmap"], help="train_many backend (resnet20)"
    )
    p.add_argument("--compile", action="store_true", help="use torch.compile (embedded: extra rows, stacked backend)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (resnet20; default: torch's)")
    p.add_argument("--no-bf16", action="store_true", help="fp32 training on CUDA")
    p.add_argument("--no-channels-last", action="store_true", help="contiguous NCHW on CUDA")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers of the standard pipeline")
    p.add_argument("--images", type=int, default=50_000, help="synthetic training images")
    p.add_argument("--eval-images", type=int, default=10_000, help="test images per barrier-curve evaluation")
    p.add_argument("--eval-batch", type=int, default=None, help="evaluation batch (default 5000 CUDA, 1000 CPU)")
    p.add_argument("--hvp-batch", type=int, default=1000)
    p.add_argument("--hvp-reps", type=int, default=None, help="timed Hessian-vector products (default 20 CUDA, 2 CPU)")
    p.add_argument("--skip-standard", action="store_true")
    p.add_argument("--skip-hvp", action="store_true")
    p.add_argument("--skip-barrier", action="store_true")
    g = p.add_argument_group("paper configuration count (resnet20), used when config/paper.yaml is absent")
    g.add_argument(
        "--config",
        default=str(PAPER_CONFIG),
        help="workflow config to count the trainings in (default: this repository's config/paper.yaml)",
    )
    g.add_argument("--trainings", type=int, default=None, help="number of trainings (overrides config and assumption)")
    g.add_argument("--seeds", type=int, default=4)
    g.add_argument("--rewinds", type=int, default=2, help="rewind steps of E1")
    g.add_argument("--levels", type=int, default=21, help="IMP levels 0..20")
    g.add_argument("--strengths", type=int, default=5, help="E3 perturbation strengths")
    g.add_argument("--replicates", type=int, default=2, help="E3 replicates per strength")
    g.add_argument("--bisection-steps", type=int, default=4, help="E6 bisection steps (retrainings per method)")
    g.add_argument("--methods", type=int, default=3, help="E6 pruning methods")
    g.add_argument("--e6-levels", type=int, default=7, help="E6 levels")
    e = p.add_argument_group("embedded")
    e.add_argument("--recipes", type=lambda s: s.split(","), default=["mnist1d-cnn", "mnist1d-resnet1d", "mnist1d-mlp"])
    e.add_argument("--threads-list", type=_ints, default=[1, 2], help="torch thread counts, e.g. 1,2")
    e.add_argument("--backends", type=lambda s: s.split(","), default=["stacked", "vmap"])
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if args.steps is None:
        args.steps = 200 if args.what == "resnet20" else 300
    if args.hvp_reps is None:
        args.hvp_reps = 20 if cuda else 2
    if args.what == "embedded":
        run_embedded(args)
    else:
        run_resnet20(args)


if __name__ == "__main__":
    main()
