"""When a submitted job counts as finished: SLURM's sacct states, submitit's states, failure reports.

Pure functions of plain values (no Snakemake, no submitit, no cluster). Waits are measured from the
first time a state is seen, kept in a job's ``marks`` dict (the executor passes its job's ``aux``).
"""

from collections.abc import Sequence
from typing import Any

# sacct states of jobs that may still run (REQUEUED: submitit requeued it on timeout).
SLURM_ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "COMPLETING",
    "CONFIGURING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "UNKNOWN",
}
# A PREEMPTED job is usually requeued by SLURM (PreemptMode=REQUEUE); it only
# counts as failed once it has stayed PREEMPTED this long.
PREEMPTED_GRACE_S = 300.0


def slurm_base_state(state: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED', 'CANCELLED+' -> 'CANCELLED', '' -> 'UNKNOWN'."""
    return state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"


def slurm_may_still_run(state: str) -> bool:
    """Whether sacct's state leaves the job to be polled again: an active state or PREEMPTED."""
    base = slurm_base_state(state)
    return base in SLURM_ACTIVE_STATES or base == "PREEMPTED"


def waited(marks: dict[str, Any], key: str, wait_s: float, now: float) -> bool:
    """Whether ``wait_s`` seconds have passed since ``now`` was first recorded under ``key``."""
    first_seen = marks.setdefault(key, now)
    return now - first_seen >= wait_s


def slurm_running(state: str, marks: dict[str, Any], now: float) -> bool:
    """Whether a SLURM job still counts as running: an active state, or PREEMPTED for less than
    PREEMPTED_GRACE_S (SLURM usually requeues a preempted job)."""
    base = slurm_base_state(state)
    if base == "PREEMPTED":
        return not waited(marks, "preempted_since", PREEMPTED_GRACE_S, now)
    return base in SLURM_ACTIVE_STATES


def is_completed(state: str) -> bool:
    """A state in which the job ended without error: SLURM's COMPLETED, submitit's local FINISHED."""
    return state.startswith("COMPLETED") or state == "FINISHED"


def awaiting_result(state: str, marks: dict[str, Any], now: float, latency_wait: float) -> bool:
    """Whether to wait for the result file of a job that completed without one (yet): up to
    ``latency_wait`` seconds, for a shared file system that shows files late."""
    return is_completed(state) and not waited(marks, "completed_without_result", latency_wait, now)


def failure_reason(payload: Any) -> str:
    """The last line of the error that submitit stored for a failed job (its exception's message)."""
    return str(payload).strip().splitlines()[-1]


def failure_message(cluster: str, job_id: str, reason: str, logs: Sequence[str], folder: Any) -> str:
    """Snakemake's error report for a failed job: the reason and the job's log files."""
    where = " and ".join(logs) if logs else f"none written (folder {folder})"
    return f"submitit {cluster} job {job_id} failed: {reason}\n    submitit logs: {where}\n"
