"""The CUDA fast path: data resident on the GPU, crop + flip there, train_many equal to separate
training.train runs on the GPU, bf16 autocast + channels-last, torch.compile.  Skipped without CUDA."""

import copy

import pytest
import torch

from unmasking import masks as M
from unmasking.data.base import TensorData
from unmasking.data.cifar import normalizer, random_crop_flip
from unmasking.foundations.hparams import TrainHparams
from unmasking.models import build_model, prunable_names
from unmasking.multitrain import BatchFeeder, train_many
from unmasking.training import Seeds, train

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_kernels():
    """No TF32 and deterministic cuDNN algorithms while comparing, restored afterwards."""
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    ) = saved


def _hp(**kw):
    base = dict(batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4, steps=22, milestones=[12], gamma=0.1)
    return TrainHparams(**{**base, **kw})


def _images(n=64, size=32, dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (
        torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        if dtype == torch.uint8
        else torch.rand(n, 3, size, size, generator=g, dtype=dtype)
    )
    y = torch.randint(0, 10, (n,), generator=g)
    return TensorData(
        "cifar10", x[:48], y[:48], x[48:], y[48:], 10, augment=random_crop_flip, normalize=normalizer("cifar10")
    )


def _signals(n=240, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 40, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=g)
    x = centers[y] + 0.8 * torch.randn(n, 40, generator=g, dtype=dtype)
    return TensorData("synthetic", x[:200], y[:200], x[200:], y[200:], 10)


def _setup(name, k=2, width=8, dtype=torch.float32):
    models = [build_model(name, 10, width=width, seed=i).to(CUDA, dtype) for i in range(k)]
    masks = [None] + [
        M.magnitude_prune(dict(m.named_parameters()), M.dense_mask(m, prunable_names(m)), 0.3 * i)
        for i, m in enumerate(models[1:], 1)
    ]
    return models, masks, [Seeds.from_seed(20 + i) for i in range(k)]


def _max_rel(models, refs):
    worst = 0.0
    for m, r in zip(models, refs):
        for (n, a), (_, b) in zip(m.state_dict().items(), r.state_dict().items()):
            if a.is_floating_point():
                worst = max(worst, float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12))
            else:
                assert torch.equal(a, b), n
    return worst


def _assert_masked(models, masks):
    for m, mk in zip(models, masks):
        params = dict(m.named_parameters())
        for n, keep in (mk or {}).items():
            assert torch.count_nonzero(params[n][~keep.to(params[n].device)]) == 0


def test_batches_on_the_gpu_equal_the_cpu_batches():
    """Gather, crop, flip and normalization on the GPU give the CPU pipeline's batches."""
    cpu = _images()
    gpu = cpu.to(CUDA)
    seeds = [Seeds.from_seed(i) for i in range(3)]
    ref = list(BatchFeeder(cpu, seeds, 16, torch.device("cpu")).batches(0, 5))
    for (s, x, y), (rs, rx, ry) in zip(BatchFeeder(gpu, seeds, 16, CUDA).batches(0, 5), ref):
        assert s == rs and x.device.type == "cuda"
        torch.testing.assert_close(x.cpu(), rx, rtol=1e-6, atol=1e-6)
        assert torch.equal(y.cpu(), ry)


@pytest.mark.parametrize("backend", ["stacked", "vmap"])
def test_resnet20_fast_path_equals_separate_runs_on_cuda(backend):
    """float64 on the GPU, data resident there: K at once ends where K separate runs end."""
    data = _images(size=16, dtype=torch.float64).to(CUDA)
    hp = _hp(batch_size=8, nesterov=True)
    models, masks, seeds = _setup("resnet20", width=4, dtype=torch.float64)
    refs = [copy.deepcopy(m) for m in models]
    for r, mk, s in zip(refs, masks, seeds):
        train(r, mk, data, hp, s, 2, progress=False)
    train_many(models, masks, data, hp, seeds, 2, progress=False, backend=backend)
    assert _max_rel(models, refs) <= 1e-8
    _assert_masked(models, masks)


@pytest.mark.parametrize("backend", ["stacked", "vmap"])
def test_cnn1d_fast_path_equals_separate_runs_on_cuda_fp32(backend):
    data = _signals().to(CUDA)
    hp = _hp(batch_size=20, steps=34, milestones=[20])
    models, masks, seeds = _setup("cnn1d", k=3)
    refs = [copy.deepcopy(m) for m in models]
    for r, mk, s in zip(refs, masks, seeds):
        train(r, mk, data, hp, s, 3, progress=False)
    train_many(models, masks, data, hp, seeds, 3, progress=False, backend=backend)
    assert _max_rel(models, refs) <= 1e-4
    _assert_masked(models, masks)


def test_bf16_channels_last_stays_close_to_fp32_and_keeps_masks():
    """bf16 autocast changes rounding only: after a few steps the weights' displacement differs from
    fp32's by a few percent; pruned weights stay exactly zero and BN statistics stay fp32."""
    data = _images().to(CUDA)
    hp = _hp(steps=5, milestones=[], lr=0.02)
    models, masks, seeds = _setup("resnet20")
    init = [copy.deepcopy(m) for m in models]
    fp32 = [copy.deepcopy(m) for m in models]
    train_many(fp32, masks, data, hp, seeds, 0, progress=False)
    train_many(models, masks, data, hp, seeds, 0, progress=False, bf16=True, channels_last=True)
    _assert_masked(models, masks)
    for m, f, i in zip(models, fp32, init):
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in m.parameters())
        assert all(b.dtype == f_b.dtype for b, f_b in zip(m.buffers(), f.buffers()))
        diff = sum(float((a - b).pow(2).sum()) for a, b in zip(m.parameters(), f.parameters())) ** 0.5
        moved = sum(float((b - c).pow(2).sum()) for b, c in zip(f.parameters(), i.parameters())) ** 0.5
        assert moved > 0 and diff / moved < 0.25


@pytest.mark.slow
def test_compiled_fast_path_matches_eager():
    data = _signals().to(CUDA)
    hp = _hp(batch_size=20, steps=10, milestones=[])
    models, masks, seeds = _setup("cnn1d")
    eager = [copy.deepcopy(m) for m in models]
    train_many(eager, masks, data, hp, seeds, 0, progress=False)
    train_many(models, masks, data, hp, seeds, 0, progress=False, compile=True)
    assert _max_rel(models, eager) <= 1e-4
    _assert_masked(models, masks)
