"""Train K models of one architecture at once, each exactly as :func:`unmasking.training.train` would.

Many experiments (E1 over seeds, E3's strengths × replicates, E6's fractions × methods) train
many copies of one architecture on one data set.  Small models leave the hardware idle, and
every step pays Python and kernel-launch overhead once per model; stacking the K models into one
set of tensors pays it once per step.  Each model keeps everything that
:func:`~unmasking.training.train` gives a single model:

* its own mask (gradients masked before the update, weights re-masked after it, so pruned
  weights stay exactly zero and momentum and weight decay never touch them);
* its own data order and augmentation (``seeds_list[k]``): the batch of step ``s`` is the one
  ``data.train_batches`` yields for that model alone;
* its own BatchNorm running statistics and its own SGD momentum buffers;
* the schedule :func:`~unmasking.training.lr_at` continued from ``start_step``, a fresh
  optimizer state, divergence detection, atomic checkpoints (one file for the K models) and
  exact resume.

Two backends compute the K gradients (:mod:`.backends`): ``stacked``, hand-written forward passes
over stacked parameters for the package's own architectures (MLP, CNN1d, ResNet1d, the CIFAR ResNets, VGG;
:mod:`.forwards`, built from the layers of :mod:`.kernels`), and ``vmap``, any architecture through
``torch.func.vmap(grad(functional_call(...)))``; ``auto`` picks ``stacked`` where it exists.

Both agree with K separate :func:`~unmasking.training.train` runs to float rounding
(``tests/test_multitrain.py``; to 1e-9 in float64).  ``compile=True`` wraps the loss in
``torch.compile`` (CPU or CUDA; one compiled function per architecture and K, reused by later
calls; on failure it warns and trains eagerly).  CUDA only: ``bf16=True`` runs the forward and
backward passes under bf16 autocast (weights, optimizer state and BatchNorm statistics stay
fp32; stacked backend only) and ``channels_last=True`` uses the channels-last layout for 2-D
convolutions.  Keep the data on the GPU (``TensorData.to('cuda')``): batches are then gathered,
cropped, flipped and normalized there.  Measurements: ``docs/performance.md``.

The modules, bottom up: :mod:`.feeding` (each model's batches and augmentation, stacked),
:mod:`.kernels` (stacked layers and autograd kernels), :mod:`.forwards` (the stacked forward per
architecture, a registry keyed by model class), :mod:`.backends` (the K gradients, compiled or not),
:mod:`.trainer` (:class:`MultiTrainer` and :func:`train_many`).
"""

from .backends import BACKENDS
from .feeding import BatchFeeder, crop_flip, crop_flip_draws
from .forwards import STACKED_FORWARDS, VMAP_ONLY, stacked_forward
from .kernels import StackedOps
from .trainer import MultiTrainer, train_many

__all__ = [
    "BACKENDS",
    "STACKED_FORWARDS",
    "VMAP_ONLY",
    "BatchFeeder",
    "MultiTrainer",
    "StackedOps",
    "crop_flip",
    "crop_flip_draws",
    "stacked_forward",
    "train_many",
]
