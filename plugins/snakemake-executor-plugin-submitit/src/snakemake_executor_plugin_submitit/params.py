"""What the executor submits: submitit parameters from a job's resources, sbatch options, names, folders.

Pure functions of plain values (no Snakemake, no submitit, no cluster), so that every mapping is
unit-tested without SLURM. Snakemake resources map to submitit/SLURM parameters:

==================  =============================================
Snakemake           submitit / sbatch
==================  =============================================
threads             cpus_per_task (``--cpus-per-task``)
runtime (minutes)   timeout_min (``--time``)
mem_mb              mem_gb (``--mem``)
mem_mb_per_cpu      ``--mem-per-cpu``
gpu                 gpus_per_node (``--gpus-per-node``)
gpu + gpu_model     ``--gres=gpu:<model>:<gpu>``
slurm_partition     ``--partition``
slurm_account       ``--account``
qos                 ``--qos``
constraint          ``--constraint``
slurm_extra         any further sbatch options, e.g. ``"--reservation=x"``
==================  =============================================
"""

import math
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError

CLUSTERS = ("slurm", "local", "debug")

# Resources passed to SLURM as they are: Snakemake resource -> submitit parameter.
SLURM_RESOURCES = {
    "slurm_partition": "slurm_partition",
    "slurm_account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
}


def job_name(rule: str, wildcards: Mapping[str, Any] | None = None) -> str:
    """The SLURM job name of a Snakemake job (``squeue --me -o "%.10i %.60j %.8T %.10M"`` shows it):
    the rule and its wildcards, e.g. ``train_level:arch=resnet20,rewind=0,seed=1,level=03``; characters
    that sbatch scripts or ``squeue`` would mangle become ``_``, and the name stops at 128 characters."""
    name = rule + (":" + ",".join(f"{k}={v}" for k, v in wildcards.items()) if wildcards else "")
    return re.sub(r"[^A-Za-z0-9_.:=,+-]", "_", name)[:128]


def job_folder(folder: str) -> Path:
    """The absolute folder pattern for submitit's files; ``%j`` (the job id) is appended if missing."""
    path = Path(folder).expanduser()
    if "%j" not in str(path):
        path = path / "%j"
    return path.absolute()


def check_timing(signal_delay: int, grace_period: int) -> None:
    """The timeout signal must leave the job's command its whole grace period before the time limit."""
    if signal_delay <= grace_period:
        raise WorkflowError(
            f"--submitit-signal-delay ({signal_delay}s) must be larger than --submitit-grace-period ({grace_period}s)"
        )


def parse_sbatch_options(text: str) -> dict[str, Any]:
    """Parse long sbatch options ("--a=1 --b 2 --flag") into submitit's additional_parameters."""
    tokens = shlex.split(text)
    options: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise WorkflowError(
                f"slurm_extra must consist of long sbatch options (--name=value or --flag); got {token!r} in {text!r}"
            )
        name, has_value, value = token[2:].partition("=")
        if not has_value:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                value = tokens[i + 1]
                i += 1
            else:
                value = True
        options[name.replace("-", "_")] = value
        i += 1
    return options


def submitit_parameters(
    resources: Mapping[str, Any],
    *,
    name: str,
    threads: int,
    cluster: str,
    default_runtime: int,
    signal_delay: int,
    extra_sbatch: Mapping[str, Any],
) -> dict[str, Any]:
    """``AutoExecutor.update_parameters()`` arguments for a job's resources (the table above).

    ``resources`` is anything with ``get``, e.g. a Snakemake job's ``resources``; resources that are
    missing, 0 or '' are not passed. Only a SLURM job gets the SLURM-only parameters: memory in MB,
    GPU models, partition/account/qos/constraint, the timeout signal, ``--requeue`` and the extra
    sbatch options (``extra_sbatch`` for every job, overridden option by option by the job's
    ``slurm_extra`` resource).
    """
    slurm = cluster == "slurm"
    runtime = resources.get("runtime") or default_runtime
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": int(math.ceil(float(runtime))),
        "cpus_per_task": int(threads),
    }
    params.update(_memory(resources, slurm))
    params.update(_gpus(resources, slurm))
    if slurm:
        params.update(_slurm_only(resources, signal_delay, extra_sbatch))
    return params


def _memory(resources: Mapping[str, Any], slurm: bool) -> dict[str, Any]:
    """Memory per CPU (SLURM only) wins over memory per job; submitit's mem_gb serves other clusters."""
    if slurm and resources.get("mem_mb_per_cpu"):
        return {"slurm_mem_per_cpu": f"{int(resources['mem_mb_per_cpu'])}M"}
    if not resources.get("mem_mb"):
        return {}
    params: dict[str, Any] = {"mem_gb": float(resources["mem_mb"]) / 1024}
    if slurm:
        params["slurm_mem"] = f"{int(resources['mem_mb'])}M"
    return params


def _gpus(resources: Mapping[str, Any], slurm: bool) -> dict[str, Any]:
    """GPUs per node, or a ``gpu:<model>:<n>`` gres on SLURM when the job names a GPU model."""
    gpus = int(resources.get("gpu") or 0)
    if gpus and slurm and resources.get("gpu_model"):
        return {"slurm_gres": f"gpu:{resources['gpu_model']}:{gpus}"}
    if gpus:
        return {"gpus_per_node": gpus}
    return {}


def _slurm_only(resources: Mapping[str, Any], signal_delay: int, extra_sbatch: Mapping[str, Any]) -> dict[str, Any]:
    """Partition, account, qos, constraint, the timeout signal and the additional sbatch options."""
    params: dict[str, Any] = {
        param: str(resources[resource]) for resource, param in SLURM_RESOURCES.items() if resources.get(resource)
    }
    params["slurm_signal_delay_s"] = signal_delay
    extra = {"requeue": True, **extra_sbatch}
    if resources.get("slurm_extra"):
        extra.update(parse_sbatch_options(str(resources["slurm_extra"])))
    params["slurm_additional_parameters"] = extra
    return params
