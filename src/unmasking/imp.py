"""Iterative magnitude pruning with rewinding (SPEC §2, experiment E1), as resumable steps.

A run lives in one folder::

    run.json              recipe, seed and derived seeds (a rerun with another config is refused)
    init.pt               w_0: the dense initialization (model state dict)
    rewind.pt             w_t: the dense network after ``prune.rewind_step`` steps
    level_LL/mask.pt      m_L (dict of boolean tensors keyed by parameter name)
    level_LL/final.pt     w_L: the level-L solution
    level_LL/metrics.json test/train error and loss, density
    level_LL/prune.json   (L ≥ 1) R_{L-1}, d_{L-1} and counts of the pruning step that made m_L
    level_LL/train.ckpt   in-progress training state (removed when the level finishes)

Each step (:func:`pretrain`, :func:`train_level`, :func:`prune`) is idempotent: a finished
step is not redone, and an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch
import xarray as xr
from tqdm.auto import tqdm

from . import masks as M
from .data import Data, TensorData, load_data
from .foundations.checkpoints import atomic_torch_save, load_checkpoint
from .foundations.hparams import ConfigError, Recipe
from .foundations.io import read_json, write_json
from .foundations.netcdf import provenance
from .foundations.recipes import recipe_from_dict
from .models import build_model, prunable_names
from .training import Seeds, default_device, evaluate_all, train


@dataclass
class ImpRun:
    """One IMP run (recipe × seed) in ``root``; holds paths and lazily loaded data."""

    recipe: Recipe
    seed: int
    root: Path
    device: torch.device | None = None
    progress: bool = True
    compile: bool = False  # train through multitrain's compiled step (fast on CPU; not bitwise eager)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.device = torch.device(self.device) if self.device is not None else default_device()
        self.seeds = Seeds.from_seed(self.seed)
        self._check_run_json()

    @classmethod
    def open(cls, root: str | Path, **kw) -> "ImpRun":
        """Reopen an existing run from its ``run.json``."""
        info = read_json(Path(root) / "run.json")
        return cls(recipe_from_dict(info["recipe"]), info["seed"], Path(root), **kw)

    def _check_run_json(self) -> None:
        path = self.root / "run.json"
        info = {
            "recipe": self.recipe.to_dict(),
            "recipe_hash": self.recipe.hash(),
            "seed": self.seed,
            "seeds": asdict(self.seeds),
        }
        if path.exists():
            old = read_json(path)
            if old.get("recipe_hash") != info["recipe_hash"] or old.get("seed") != self.seed:
                raise ConfigError(
                    f"{self.root} holds a run with a different recipe or seed (hash {old.get('recipe_hash')}, "
                    f"seed {old.get('seed')}; now {info['recipe_hash']}, seed {self.seed}). Use another output "
                    f"folder, or delete {self.root} to start over."
                )
        else:
            write_json(info, path)

    # paths
    def level_dir(self, level: int) -> Path:
        return self.root / f"level_{level:02d}"

    def mask_path(self, level: int) -> Path:
        return self.level_dir(level) / "mask.pt"

    def final_path(self, level: int) -> Path:
        return self.level_dir(level) / "final.pt"

    def metrics_path(self, level: int) -> Path:
        return self.level_dir(level) / "metrics.json"

    # loaded state
    @cached_property
    def data(self) -> Data:
        """The run's data set; in-memory data sets live on the run's device (GPU-resident on CUDA)."""
        data = load_data(self.recipe.data)
        return data.to(self.device) if isinstance(data, TensorData) and self.device.type == "cuda" else data

    def new_model(self) -> torch.nn.Module:
        m = self.recipe.model
        return build_model(m.name, self.data.num_classes, m.width, seed=self.seeds.init).to(self.device)

    @cached_property
    def prunable(self) -> list[str]:
        return prunable_names(
            build_model(self.recipe.model.name, self.data.num_classes, self.recipe.model.width),
            self.recipe.prune.ignore,
        )

    def load_model(self, path: Path) -> torch.nn.Module:
        model = self.new_model()
        model.load_state_dict(load_checkpoint(path, map_location=self.device))
        return model

    def mask(self, level: int) -> M.Mask:
        if level == 0 and not self.mask_path(0).exists():
            M.save_mask(M.dense_mask(self.new_model(), self.prunable), self.mask_path(0))
        return M.load_mask(self.mask_path(level))

    def rewind_model(self) -> torch.nn.Module:
        return self.load_model(self.root / "rewind.pt")

    def solution(self, level: int) -> torch.nn.Module:
        return self.load_model(self.final_path(level))

    def _train(self, model, mask, start: int, end: int | None, ckpt: Path, what: str) -> list[dict[str, float]]:
        """``training.train``, or with ``compile`` the same training as a compiled one-model ``train_many``."""
        if not self.compile:
            return train(
                model,
                mask,
                self.data,
                self.recipe.train,
                self.seeds,
                start,
                end,
                checkpoint=ckpt,
                progress=self._desc(what),
            )
        from .multitrain import train_many

        return train_many(
            [model],
            [mask],
            self.data,
            self.recipe.train,
            [self.seeds],
            start,
            end,
            checkpoint=ckpt,
            progress=self._desc(what),
            compile=True,
        )[0]

    # steps
    def pretrain(self) -> Path:
        """Save ``w_0`` and train the dense network to the rewind step ``t``, saving ``w_t``."""
        out = self.root / "rewind.pt"
        if out.exists():
            return out
        model = self.new_model()
        init = self.root / "init.pt"
        if not init.exists():
            atomic_torch_save(model.state_dict(), init)
        t = self.recipe.prune.rewind_step
        if t > 0:
            self._train(model, None, 0, t, self.root / "pretrain.ckpt", "pretrain")
        atomic_torch_save(model.state_dict(), out)
        (self.root / "pretrain.ckpt").unlink(missing_ok=True)
        return out

    def train_level(self, level: int) -> dict[str, float]:
        """Train ``m_L ⊙ w_t`` from step ``t`` to the end of the schedule; save ``w_L`` and its metrics."""
        if self.final_path(level).exists() and self.metrics_path(level).exists():
            return read_json(self.metrics_path(level))
        if not (self.root / "rewind.pt").exists():
            raise FileNotFoundError(f"{self.root / 'rewind.pt'} is missing; run pretrain first")
        mask = self.mask(level)
        model = self.rewind_model()
        ckpt = self.level_dir(level) / "train.ckpt"
        history = self._train(model, mask, self.recipe.prune.rewind_step, None, ckpt, f"level {level}")
        metrics = {
            "level": level,
            "density": M.density(mask),
            "remaining": M.count(mask),
            **evaluate_all(model, self.data, self.recipe.train.eval_batch_size),
            "history": history,
        }
        atomic_torch_save(model.state_dict(), self.final_path(level))
        write_json(metrics, self.metrics_path(level))
        ckpt.unlink(missing_ok=True)
        return metrics

    def prune(self, level: int) -> M.Mask:
        """Make ``m_{L+1}`` from ``w_L`` by global magnitude pruning; record ``R_L`` and ``d_L``."""
        nxt = self.mask_path(level + 1)
        if nxt.exists() and (self.level_dir(level + 1) / "prune.json").exists():
            return M.load_mask(nxt)
        mask = self.mask(level)
        weights = dict(self.solution(level).named_parameters())
        new = M.magnitude_prune(weights, mask, self.recipe.prune.fraction)
        removed = M.difference(mask, new)
        rewind = dict(self.rewind_model().named_parameters())
        stats = {
            "from_level": level,
            "pruned": M.count(removed),
            "remaining": M.count(new),
            "projection_length": M.masked_norm(weights, removed),
            "rewind_distance": M.masked_norm(rewind, removed),
            "layer_density": M.layer_densities(new),
        }
        M.save_mask(new, nxt)
        write_json(stats, self.level_dir(level + 1) / "prune.json")
        return new

    def run(self, levels: int | None = None) -> xr.Dataset:
        """Pretrain, then train and prune level by level up to ``levels`` (default: the recipe's)."""
        levels = self.recipe.prune.levels if levels is None else levels
        if not isinstance(levels, int) or levels < 0:
            raise ConfigError(f"the last IMP level must be an integer >= 0 (0: the dense network only), got {levels}")
        self.pretrain()
        for level in tqdm(
            range(levels + 1), desc=f"IMP {self.recipe.name} seed {self.seed}", disable=not self.progress
        ):
            self.train_level(level)
            if level < levels:
                self.prune(level)
        return self.summary(levels)

    def _desc(self, what: str) -> str | bool:
        return f"{self.recipe.name} s{self.seed} {what}" if self.progress else False

    def summary(self, levels: int | None = None) -> xr.Dataset:
        """Per-level metrics of the finished levels as a dataset with ``level`` and ``seed`` coordinates."""
        levels = self.recipe.prune.levels if levels is None else levels
        if not isinstance(levels, int) or levels < 0:
            raise ConfigError(f"the last IMP level must be an integer >= 0 (0: the dense network only), got {levels}")
        rows = []
        for level in range(levels + 1):
            if not self.metrics_path(level).exists():
                raise FileNotFoundError(f"level {level} of {self.root} is not trained yet")
            m = read_json(self.metrics_path(level))
            p = self.level_dir(level + 1) / "prune.json"
            pr = read_json(p) if p.exists() else {}
            rows.append(
                {
                    **m,
                    "projection_length": pr.get("projection_length", float("nan")),
                    "rewind_distance": pr.get("rewind_distance", float("nan")),
                }
            )
        names = [
            "test_error",
            "train_error",
            "test_loss",
            "train_loss",
            "density",
            "remaining",
            "projection_length",
            "rewind_distance",
        ]
        units = {
            "density": "fraction of prunable weights",
            "projection_length": "R_L = |(m_L - m_L+1) * w_L|",
            "rewind_distance": "d_L = |(m_L - m_L+1) * w_t|",
        }
        ds = xr.Dataset(
            {n: (("seed", "level"), [[float(r[n]) for r in rows]], {"description": units.get(n, n)}) for n in names},
            coords={"seed": [self.seed], "level": list(range(levels + 1))},
        )
        ds.attrs.update(
            provenance(
                self.recipe.hash(),
                asdict(self.seeds),
                str(self.device),
                recipe=self.recipe.to_dict(),
                recipe_name=self.recipe.name,
                rewind_step=self.recipe.prune.rewind_step,
                experiment="E1_imp",
            )
        )
        return ds
