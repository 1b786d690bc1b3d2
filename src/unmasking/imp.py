"""Iterative magnitude pruning with rewinding (SPEC §2, experiment E1), as resumable steps.

A run lives in one folder::

    run.json              recipe, seed, derived seeds and training mode (another recipe or seed is refused)
    init.pt               w_0: the dense initialization (model state dict)
    rewind.pt             w_t: the dense network after ``prune.rewind_step`` steps
    level_LL/mask.pt      m_L (dict of boolean tensors keyed by parameter name)
    level_LL/final.pt     w_L: the level-L solution
    level_LL/metrics.json test/train error and loss, density
    level_LL/prune.json   (L ≥ 1) R_{L-1}, d_{L-1} and counts of the pruning step that made m_L
    level_LL/train.ckpt   in-progress training state (removed when the level finishes)

Each step (:func:`pretrain`, :func:`train_level`, :func:`prune`) is idempotent: a finished
step is not redone, and an interrupted one resumes from its checkpoint.

Every file of the folder carries the run's identity (recipe hash, seed, kind, level, training mode;
:mod:`unmasking.foundations.identity`) and every read checks it, so a file of another run, seed or
level copied into the folder is refused, not used.  A run is trained in one mode
(:class:`~unmasking.foundations.identity.TrainingMode`: compiled or eager, precision, device type, CPU
threads), recorded in ``run.json`` when the run is created: a step that would train in another mode is
refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch
import xarray as xr
from tqdm.auto import tqdm

from . import __version__
from . import masks as M
from .data import Data, TensorData, load_data
from .foundations.checkpoints import load_artifact, load_checkpoint, save_artifact
from .foundations.hparams import ConfigError, Recipe
from .foundations.identity import IdentityError, TrainingMode, check_identity
from .foundations.io import read_json, write_json
from .foundations.netcdf import provenance
from .foundations.recipes import recipe_from_dict
from .models import build_model, prunable_names
from .training import Seeds, default_device, evaluate_all, train


def restart_hint(root: Path) -> str:
    """How to start a run folder over: delete it (in the workflow layout, also the imp.nc beside it)."""
    summary = root.parent / "imp.nc"
    also = f" and {summary}" if summary.exists() else ""
    return f"delete {root}{also} and run its IMP again (in the workflow: snakemake)"


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
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is False); use "
                "--device cpu, or run on a GPU node"
            )
        self.seeds = Seeds.from_seed(self.seed)
        # the mode this process trains in; the run's own (run.json) is `run_mode`
        threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        self.mode = TrainingMode(compile=self.compile, device=self.device.type, threads=threads)
        self.run_mode = self._check_run_json()

    @classmethod
    def open(cls, root: str | Path, seed: int | None = None, recipe_hash: str | None = None, **kw) -> "ImpRun":
        """Reopen an existing run from its ``run.json``; with ``seed`` / ``recipe_hash``, refuse a run
        that holds another (a folder moved or copied to the wrong place)."""
        path = Path(root) / "run.json"
        if not path.exists():
            raise FileNotFoundError(f"{root} is not an IMP run folder (no run.json); run `unmasking imp` first")
        info = read_json(path)
        recipe = recipe_from_dict(info["recipe"])
        if recipe.hash() != info.get("recipe_hash"):
            raise IdentityError(
                f"{path} is inconsistent: its recipe hashes to {recipe.hash()} but it records "
                f"{info.get('recipe_hash')} (edited by hand?); restore it, or {restart_hint(Path(root))}"
            )
        expect = {k: v for k, v in (("seed", seed), ("recipe_hash", recipe_hash)) if v is not None}
        check_identity(
            path,
            info,
            expect,
            f"the folder was moved or copied: move it back where its seed and recipe belong, or "
            f"{restart_hint(Path(root))}",
        )
        return cls(recipe, info["seed"], Path(root), **kw)

    def _check_run_json(self) -> TrainingMode:
        """Write ``run.json`` for a new run, or check an existing one's recipe and seed; the run's mode."""
        path = self.root / "run.json"
        if not path.exists():
            info = {
                "recipe": self.recipe.to_dict(),
                "recipe_hash": self.recipe.hash(),
                "seed": self.seed,
                "seeds": asdict(self.seeds),
                "mode": self.mode.to_dict(),
                "package_version": __version__,
            }
            write_json(info, path)
            return self.mode
        old = read_json(path)
        if old.get("recipe_hash") != self.recipe.hash() or old.get("seed") != self.seed:
            raise ConfigError(
                f"{self.root} holds a run with a different recipe or seed (hash {old.get('recipe_hash')}, "
                f"seed {old.get('seed')}; now {self.recipe.hash()}, seed {self.seed}). Use another output "
                f"folder, or delete {self.root} to start over."
            )
        if not isinstance(old.get("mode"), dict):
            raise IdentityError(
                f"{path} records no training mode (the run was made by an older version of unmasking); "
                f"{restart_hint(self.root)}"
            )
        init = self.root / "init.pt"
        if init.exists():  # w_0 was written with run.json: if they disagree, one of them was replaced
            held = load_checkpoint(init)
            check_identity(
                init,
                held.get("identity") if isinstance(held, dict) else None,
                {"recipe_hash": old["recipe_hash"], "seed": old["seed"]},
                f"it disagrees with {path}: one of the two was replaced or edited; restore it, or "
                f"{restart_hint(self.root)}",
            )
        return TrainingMode.from_dict(old["mode"])

    def _require_mode(self) -> None:
        """Refuse to train this run in another mode than the one it was trained in so far."""
        if self.mode == self.run_mode:
            return
        how = []
        if self.mode.compile != self.run_mode.compile:
            how.append("with --compile" if self.run_mode.compile else "without --compile")
        if self.mode.device != self.run_mode.device:
            how.append(f"with --device {self.run_mode.device}")
        elif self.mode.threads != self.run_mode.threads:
            how.append(f"with OMP_NUM_THREADS={self.run_mode.threads}")
        raise IdentityError(
            f"{self.root} was trained {self.run_mode}; this command would continue it {self.mode}, which mixes "
            f"two modes in one run: continue it {' and '.join(how) or 'in its mode'}, or {restart_hint(self.root)} "
            f"(the workflow starts over by itself when `compile:` changes)"
        )

    # identity of the run's files
    def identity(self, kind: str, level: int | None = None) -> dict:
        """What a file of this run holds: recipe hash, seed, kind, level and the run's training mode."""
        out = {"recipe_hash": self.recipe.hash(), "seed": self.seed, "kind": kind, "mode": self.run_mode.to_dict()}
        if level is not None:
            out["level"] = level
        return out

    def _fix(self) -> str:
        return (
            f"it is not this run's file: delete it and rerun the run's IMP (`unmasking imp --run {self.root}` with "
            f"the run's options and threads retrains what is missing; in the workflow, run snakemake again: it "
            f"regenerates the file or names the command that does)"
        )

    def save_state(self, state, path: Path, kind: str, level: int | None = None) -> None:
        save_artifact(state, path, {**self.identity(kind, level), "package_version": __version__})

    def load_state(self, path: Path, kind: str, level: int | None = None, map_location=None):
        """A state dict or mask of this run, after checking that ``path`` holds this run's ``kind`` (level)."""
        return load_artifact(path, self.identity(kind, level), self._fix(), map_location or self.device)

    def write_record(self, record: dict, path: Path, kind: str, level: int | None = None) -> None:
        """A JSON record (metrics, pruning statistics) of this run, with its identity."""
        write_json({**record, "identity": {**self.identity(kind, level), "package_version": __version__}}, path)

    def read_record(self, path: Path, kind: str, level: int | None = None) -> dict:
        record = read_json(path)
        check_identity(path, record.pop("identity", None), self.identity(kind, level), self._fix())
        return record

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

    def load_model(self, path: Path, kind: str, level: int | None = None) -> torch.nn.Module:
        model = self.new_model()
        try:
            model.load_state_dict(self.load_state(path, kind, level))
        except RuntimeError as e:  # identity forged onto another architecture's weights
            raise IdentityError(f"{path} does not hold {self.recipe.model.name} weights ({str(e).splitlines()[0]})")
        return model

    def mask(self, level: int) -> M.Mask:
        if level == 0 and not self.mask_path(0).exists():
            self.save_mask(M.dense_mask(self.new_model(), self.prunable), 0)
        return {n: m.bool() for n, m in self.load_state(self.mask_path(level), "mask", level, "cpu").items()}

    def save_mask(self, mask: M.Mask, level: int) -> None:
        self.save_state({n: m.cpu().bool() for n, m in mask.items()}, self.mask_path(level), "mask", level)

    def rewind_state(self, map_location=None) -> dict:
        """``w_t`` as a state dict."""
        return self.load_state(self.root / "rewind.pt", "rewind", None, map_location)

    def final_state(self, level: int, map_location=None) -> dict:
        """``w_L`` as a state dict."""
        return self.load_state(self.final_path(level), "final", level, map_location)

    def rewind_model(self) -> torch.nn.Module:
        return self.load_model(self.root / "rewind.pt", "rewind")

    def solution(self, level: int) -> torch.nn.Module:
        return self.load_model(self.final_path(level), "final", level)

    def _train(
        self, model, mask, start: int, end: int | None, ckpt: Path, what: str, identity: dict
    ) -> list[dict[str, float]]:
        """``training.train``, or with ``compile`` the same training as a compiled one-model ``train_many``;
        ``identity`` is stored in the checkpoint ``ckpt`` and checked when training resumes from it."""
        self._require_mode()
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
                identity=identity,
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
            identity=identity,
        )[0]

    # steps
    def pretrain(self) -> Path:
        """Save ``w_0`` and train the dense network to the rewind step ``t``, saving ``w_t``."""
        out = self.root / "rewind.pt"
        if out.exists():
            return out
        self._require_mode()
        model = self.new_model()
        init = self.root / "init.pt"
        if not init.exists():
            self.save_state(model.state_dict(), init, "init")
        t = self.recipe.prune.rewind_step
        if t > 0:
            self._train(model, None, 0, t, self.root / "pretrain.ckpt", "pretrain", self.identity("pretrain_state"))
        self.save_state(model.state_dict(), out, "rewind")
        (self.root / "pretrain.ckpt").unlink(missing_ok=True)
        self._sweep()
        return out

    def train_level(self, level: int) -> dict[str, float]:
        """Train ``m_L ⊙ w_t`` from step ``t`` to the end of the schedule; save ``w_L`` and its metrics."""
        if self.final_path(level).exists() and self.metrics_path(level).exists():
            self.final_state(level)  # checks that the finished level is this run's
            return self.read_record(self.metrics_path(level), "metrics", level)
        if not (self.root / "rewind.pt").exists():
            raise FileNotFoundError(f"{self.root / 'rewind.pt'} is missing; run pretrain first")
        self._require_mode()
        mask = self.mask(level)
        model = self.rewind_model()
        ckpt = self.level_dir(level) / "train.ckpt"
        history = self._train(
            model,
            mask,
            self.recipe.prune.rewind_step,
            None,
            ckpt,
            f"level {level}",
            self.identity("train_state", level),
        )
        metrics = {
            "level": level,
            "density": M.density(mask),
            "remaining": M.count(mask),
            **evaluate_all(model, self.data, self.recipe.train.eval_batch_size),
            "history": history,
        }
        self.save_state(model.state_dict(), self.final_path(level), "final", level)
        self.write_record(metrics, self.metrics_path(level), "metrics", level)
        ckpt.unlink(missing_ok=True)
        self._sweep()
        return metrics

    def prune(self, level: int) -> M.Mask:
        """Make ``m_{L+1}`` from ``w_L`` by global magnitude pruning; record ``R_L`` and ``d_L``."""
        nxt = self.mask_path(level + 1)
        if nxt.exists() and (self.level_dir(level + 1) / "prune.json").exists():
            return self.mask(level + 1)
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
        self.save_mask(new, level + 1)
        self.write_record(stats, self.level_dir(level + 1) / "prune.json", "prune_stats", level + 1)
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

    def _sweep(self) -> None:
        """Remove the temporary files of writes that a kill interrupted (``.<name>.<random>.tmp``, see
        :func:`~unmasking.foundations.io.atomic_path`): never read, only litter.  Safe after a step: a
        run's steps write its folder one at a time (the workflow chains them)."""
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)

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
            m = self.read_record(self.metrics_path(level), "metrics", level)
            p = self.level_dir(level + 1) / "prune.json"
            pr = self.read_record(p, "prune_stats", level + 1) if p.exists() else {}
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
        ds.attrs.update(self.provenance("E1_imp"))
        return ds

    def provenance(self, experiment: str, **extra) -> dict:
        """Attributes of a result computed from this run: what it is (experiment, recipe hash, seeds,
        rewind step, training mode), where it came from, and ``extra`` (the analysis' parameters)."""
        return provenance(
            self.recipe.hash(),
            {"run": self.seed, **asdict(self.seeds)},
            str(self.device),
            experiment=experiment,
            recipe_name=self.recipe.name,
            recipe=self.recipe.to_dict(),
            rewind_step=self.recipe.prune.rewind_step,
            training_mode=str(self.run_mode),
            run_dir=str(self.root),
            **extra,
        )
