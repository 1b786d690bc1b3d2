"""Cluster-free tests of states.py: each SLURM/submitit state string, the waits, the failure reports."""

import pytest

from snakemake_executor_plugin_submitit.states import (
    PREEMPTED_GRACE_S,
    SLURM_ACTIVE_STATES,
    awaiting_result,
    failure_message,
    failure_reason,
    is_completed,
    slurm_base_state,
    slurm_may_still_run,
    slurm_running,
    waited,
)

# sacct's states of jobs that ended (see `man sacct`, JOB STATE CODES).
SLURM_FINAL_STATES = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "CANCELLED by 0",
    "CANCELLED+",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
]


@pytest.mark.parametrize(
    ("state", "base"),
    [
        ("RUNNING", "RUNNING"),
        ("CANCELLED by 0", "CANCELLED"),
        ("CANCELLED+", "CANCELLED"),
        ("COMPLETED", "COMPLETED"),
        ("REQUEUED", "REQUEUED"),
        ("", "UNKNOWN"),
        ("   ", "UNKNOWN"),
    ],
)
def test_slurm_base_state(state, base):
    assert slurm_base_state(state) == base


@pytest.mark.parametrize("state", sorted(SLURM_ACTIVE_STATES) + ["PREEMPTED", "", "RUNNING+"])
def test_states_that_may_still_run_are_polled_again(state):
    assert slurm_may_still_run(state)


@pytest.mark.parametrize("state", SLURM_FINAL_STATES)
def test_final_states_are_done(state):
    assert not slurm_may_still_run(state)
    assert not slurm_running(state, {}, now=0.0)


@pytest.mark.parametrize("state", sorted(SLURM_ACTIVE_STATES))
def test_active_states_keep_running(state):
    marks: dict = {}
    assert slurm_running(state, marks, now=0.0)
    assert marks == {}


def test_preempted_counts_as_running_for_a_grace_period():
    marks: dict = {}
    assert PREEMPTED_GRACE_S == 300.0
    assert slurm_running("PREEMPTED", marks, now=1000.0)
    assert marks == {"preempted_since": 1000.0}
    assert slurm_running("PREEMPTED", marks, now=1299.9)
    assert not slurm_running("PREEMPTED", marks, now=1300.0)


def test_waited_counts_from_the_first_call():
    marks: dict = {}
    assert not waited(marks, "k", 5.0, now=10.0)
    assert not waited(marks, "k", 5.0, now=14.0)
    assert waited(marks, "k", 5.0, now=15.0)
    assert waited({}, "k", 0.0, now=3.0)


@pytest.mark.parametrize(
    ("state", "completed"),
    [("COMPLETED", True), ("COMPLETED+", True), ("FINISHED", True), ("FAILED", False), ("RUNNING", False)],
)
def test_completed_states(state, completed):
    assert is_completed(state) is completed


def test_a_completed_job_without_result_waits_latency_wait():
    marks: dict = {}
    assert awaiting_result("COMPLETED", marks, now=50.0, latency_wait=5.0)
    assert awaiting_result("COMPLETED", marks, now=54.0, latency_wait=5.0)
    assert not awaiting_result("COMPLETED", marks, now=55.0, latency_wait=5.0)
    assert marks == {"completed_without_result": 50.0}
    assert awaiting_result("FINISHED", {}, now=0.0, latency_wait=5.0)
    assert not awaiting_result("COMPLETED", {}, now=0.0, latency_wait=0.0)
    for failed in ("FAILED", "TIMEOUT", "CANCELLED by 0", "INTERRUPTED"):
        assert not awaiting_result(failed, {}, now=0.0, latency_wait=5.0)


def test_failure_reason_is_the_last_line_of_the_stored_error():
    traceback = "Traceback (most recent call last):\n  File ...\nRuntimeError: Snakemake job command exited with code 3"
    assert failure_reason(traceback) == "RuntimeError: Snakemake job command exited with code 3"
    assert failure_reason(ValueError("bad\nworse")) == "worse"


def test_failure_message_names_the_logs_or_the_folder():
    logs = ["/w/.snakemake/submitit/7/7_0_log.out", "/w/.snakemake/submitit/7/7_0_log.err"]
    assert failure_message("slurm", "7", "exited with code 3", logs, "/w/.snakemake/submitit/7") == (
        "submitit slurm job 7 failed: exited with code 3\n"
        "    submitit logs: /w/.snakemake/submitit/7/7_0_log.out and /w/.snakemake/submitit/7/7_0_log.err\n"
    )
    assert failure_message("local", "123", "ended with state FAILED without a result", [], "/w/x/123") == (
        "submitit local job 123 failed: ended with state FAILED without a result\n"
        "    submitit logs: none written (folder /w/x/123)\n"
    )
