"""Prepare a run folder for a run's first job: keep it, start it over, or refuse it.

Usage: ``python fresh_run.py RUN_DIR RECIPE_HASH SEED [--compile]`` (``--compile``: the config trains
the run through torch.compile).

- Same recipe, seed and ``compile`` as the config (an interrupted or finished run): kept, so its
  checkpoints resume.
- Another recipe or training mode (the config changed; Snakemake reruns the first job because its
  ``hash`` or ``compile`` param changed), an unreadable ``run.json``, or one made by an older version
  without a training mode: the folder is removed and the run starts over; ``unmasking`` would refuse
  to mix the two.
- Another seed: the folder was moved or copied from another run's place. That is refused (exit 2,
  one line), not deleted: it may hold hours of another run's training.
"""

import json
import shutil
import sys
from pathlib import Path


def main(run_dir: str, recipe_hash: str, seed: str, *flags: str) -> int:
    compile = "--compile" in flags
    root = Path(run_dir)
    info_path = root / "run.json"
    if not info_path.exists():
        return 0
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        info = {}
    if "seed" in info and info["seed"] != int(seed):
        print(
            f"{root} holds the run of seed {info['seed']} (its run.json) where the config expects seed {seed}: "
            f"the folder was moved or copied; move it back to its own seed's place or delete it, then run "
            f"snakemake again",
            file=sys.stderr,
        )
        return 2
    mode = info.get("mode") if isinstance(info.get("mode"), dict) else {}
    if info.get("recipe_hash") == recipe_hash and mode.get("compile") == compile:
        return 0
    held = f"recipe {info.get('recipe_hash')} trained {'compiled' if mode.get('compile') else 'eager'}"
    if not mode:
        held = f"recipe {info.get('recipe_hash')} without a recorded training mode"
    print(
        f"removing {root}: it holds {held}, the config now asks for recipe {recipe_hash} trained "
        f"{'compiled' if compile else 'eager'}",
        file=sys.stderr,
    )
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
