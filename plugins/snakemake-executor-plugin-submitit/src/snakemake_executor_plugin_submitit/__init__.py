"""Snakemake executor plugin that runs each job through submitit (SLURM, local or debug).

Use it with ``snakemake --executor submitit`` (or ``executor: submitit`` in a
profile). Each Snakemake job becomes one submitit job whose callable,
:class:`~snakemake_executor_plugin_submitit.command.JobCommand`, runs the job's
Snakemake command in a subprocess. On a timeout or preemption signal (SIGUSR2
by default, sent by SLURM ``--signal``), the command gets SIGTERM and a grace
period, and submitit requeues the job, which then runs the same command again:
the job's program resumes from its own checkpoints.

Modules: this one holds what Snakemake loads (``ExecutorSettings``,
``common_settings``, ``Executor``); :mod:`.params` maps a job's resources to
submitit/SLURM parameters (the table of resources is there), :mod:`.states`
decides from SLURM's and submitit's states when a job is finished, and
:mod:`.command` is the callable that runs on the node. ``params`` and ``states``
are pure functions of plain values, unit-tested without a cluster.
"""

import asyncio
import subprocess
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Optional

import submitit
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import (
    CommonSettings,
    ExecutorSettingsBase,
)
from submitit.core.utils import pickle_load
from submitit.slurm.slurm import SlurmInfoWatcher

from snakemake_executor_plugin_submitit.command import JobCommand
from snakemake_executor_plugin_submitit.params import (
    CLUSTERS,
    check_timing,
    job_folder,
    job_name,
    parse_sbatch_options,
    submitit_parameters,
)
from snakemake_executor_plugin_submitit.states import (
    awaiting_result,
    failure_message,
    failure_reason,
    slurm_may_still_run,
    slurm_running,
)


def slurm_listed(ids: list[str]) -> list[str]:
    """Those of the jobs that ``squeue`` still lists (in any state, COMPLETING included)."""
    result = subprocess.run(
        ["squeue", "--noheader", "--format=%i", "--jobs", ",".join(ids)], capture_output=True, text=True
    )
    # squeue fails for a list of job ids that are all gone from slurmctld's memory: none is listed
    listed = set(result.stdout.split()) if result.returncode == 0 else set()
    return [i for i in ids if i in listed]


class SlurmStateWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher (one sacct call for all jobs), polled at Snakemake's pace.

    Unlike submitit's, it keeps polling jobs in every state that may still run
    (e.g. SUSPENDED, REQUEUE_HOLD, PREEMPTED).
    """

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return not slurm_may_still_run(self.get_state(job_id, mode=mode))


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """Settings of the submitit executor (``--submitit-<name>`` on the command line).

    Optional fields use ``typing.Optional``: Snakemake derives the argparse type from it.
    """

    cluster: Optional[str] = field(
        default=None,
        metadata={
            "help": "Where submitit runs the jobs: 'slurm', 'local' (subprocesses on "
            "this machine, with the same requeue logic) or 'debug' (in the Snakemake "
            "process, one at a time). Default: 'slurm' if srun is found, else 'local'.",
            "choices": list(CLUSTERS),
            "env_var": False,
            "required": False,
        },
    )
    folder: str = field(
        default=".snakemake/submitit/%j",
        metadata={
            "help": "Folder for submitit's job scripts, pickles and logs, relative to "
            "the working directory; '%%j' is replaced by the job id (appended if "
            "missing). Default: .snakemake/submitit/%%j",
            "env_var": False,
            "required": False,
        },
    )
    max_requeues: int = field(
        default=5,
        metadata={
            "help": "How often a job that reaches its time limit is requeued and "
            "resumed before it counts as failed; a preemption counts too unless it "
            "comes before 80%% of the time limit and at least 10 minutes before it. "
            "Default: 5",
            "env_var": False,
            "required": False,
        },
    )
    signal_delay: int = field(
        default=180,
        metadata={
            "help": "Seconds before the time limit at which SLURM sends the timeout "
            "signal (sbatch --signal=USR2@N); must exceed --submitit-grace-period. "
            "Default: 180",
            "env_var": False,
            "required": False,
        },
    )
    grace_period: int = field(
        default=90,
        metadata={
            "help": "Seconds a job's command gets to exit after SIGTERM (on timeout, "
            "preemption or cancel) before it is killed. Default: 90",
            "env_var": False,
            "required": False,
        },
    )
    default_runtime: int = field(
        default=60,
        metadata={
            "help": "Time limit in minutes for jobs without a 'runtime' resource. Default: 60",
            "env_var": False,
            "required": False,
        },
    )
    slurm_extra: Optional[str] = field(
        default=None,
        metadata={
            "help": "Extra sbatch options for every job, e.g. "
            "\"--reservation=foo --mail-type=FAIL\"; a job's 'slurm_extra' resource "
            "overrides them option by option.",
            "env_var": False,
            "required": False,
        },
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
)


class Executor(RemoteExecutor):
    """Submit Snakemake jobs with ``submitit.AutoExecutor`` and poll their state."""

    def __post_init__(self) -> None:
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        check_timing(self.settings.signal_delay, self.settings.grace_period)
        self.cluster = self.settings.cluster or submitit.AutoExecutor.which()
        if self.cluster == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
            raise WorkflowError(
                "--submitit-cluster slurm needs the SLURM commands (srun, sbatch, sacct) "
                "on PATH; use --submitit-cluster local to run without SLURM"
            )
        self.folder = job_folder(self.settings.folder)
        self.extra_sbatch = parse_sbatch_options(self.settings.slurm_extra or "")
        self.latency_wait = float(getattr(self.workflow.execution_settings, "latency_wait", 5))
        # Jobs submitted and not yet reported; Snakemake's own list of active jobs is
        # empty while a status check runs, and cancel must not miss any job.
        self.unfinished: dict[str, SubmittedJobInfo] = {}
        self.unfinished_lock = threading.Lock()
        self.slurm_watcher = SlurmStateWatcher()
        self.logger.info(f"submitit executor: cluster={self.cluster}, logs in {self.folder}")

    def submitit_parameters(self, job: JobExecutorInterface) -> dict:
        """AutoExecutor.update_parameters() arguments for a Snakemake job's resources."""
        return submitit_parameters(
            job.resources,
            name=job_name(job.name, getattr(job, "wildcards_dict", None)),
            threads=job.threads,
            cluster=self.cluster,
            default_runtime=self.settings.default_runtime,
            signal_delay=self.settings.signal_delay,
            extra_sbatch=self.extra_sbatch,
        )

    def run_job(self, job: JobExecutorInterface) -> None:
        executor = submitit.AutoExecutor(
            folder=self.folder,
            cluster=self.cluster,
            slurm_max_num_timeout=self.settings.max_requeues,
            local_max_num_timeout=self.settings.max_requeues,
        )
        params = self.submitit_parameters(job)
        try:
            executor.update_parameters(**params)
        except (NameError, ValueError, AssertionError) as e:
            raise WorkflowError(f"Invalid submitit parameters {params} for {job.name}: {e}") from e
        command = JobCommand(self.format_job_exec(job), grace_period_s=self.settings.grace_period)
        try:
            sjob = executor.submit(command)
        except Exception as e:
            raise WorkflowError(f"submitit could not submit job {job.name} to {self.cluster}: {e}") from e
        self.logger.info(
            f"Job {job.jobid} submitted as submitit {self.cluster} job {sjob.job_id}, log: {sjob.paths.stdout}"
        )
        job_info = SubmittedJobInfo(job, external_jobid=str(sjob.job_id), aux={"submitit_job": sjob})
        if self.cluster == "slurm":
            self.slurm_watcher.register_job(job_info.external_jobid)
        with self.unfinished_lock:
            self.unfinished[job_info.external_jobid] = job_info
        self.report_job_submission(job_info)

    def report_job_success(self, job_info: SubmittedJobInfo) -> None:
        with self.unfinished_lock:
            self.unfinished.pop(job_info.external_jobid, None)
        super().report_job_success(job_info)

    def report_job_error(self, job_info: SubmittedJobInfo, msg=None, **kwargs) -> None:
        with self.unfinished_lock:
            self.unfinished.pop(job_info.external_jobid, None)
        super().report_job_error(job_info, msg, **kwargs)

    async def check_active_jobs(self, active_jobs: list[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            # Also guards against the status thread running before __post_init__.
            return
        if self.cluster == "slurm":
            async with self.status_rate_limiter:
                await asyncio.to_thread(self.slurm_watcher.update)
        for job_info in active_jobs:
            if self.cluster == "debug":
                await asyncio.to_thread(self._run_debug_job, job_info)
                continue
            state = self._finished_state(job_info)
            if state is None:
                yield job_info
                continue
            sjob = job_info.aux["submitit_job"]
            if sjob.paths.result_pickle.exists():
                outcome, payload = pickle_load(sjob.paths.result_pickle)
                if outcome == "success":
                    self.report_job_success(job_info)
                    continue
                reason = failure_reason(payload)
            else:
                reason = f"ended with state {state} without a result"
            if self.cluster == "slurm":
                # A retry must not start while the failed job's processes still write its outputs.
                await asyncio.to_thread(self._wait_until_gone, [job_info.external_jobid])
            self._report_failure(job_info, reason)

    def _finished_state(self, job_info: SubmittedJobInfo) -> str | None:
        """The job's final state, or None while it is pending, running or requeued."""
        sjob = job_info.aux["submitit_job"]
        if sjob.paths.result_pickle.exists():
            return "COMPLETED"
        if self.cluster == "slurm":
            state = self.slurm_watcher.get_state(job_info.external_jobid, mode="cache")
            if slurm_running(state, job_info.aux, time.monotonic()):
                return None
        else:
            state = sjob.state
            if not sjob.done():
                return None
        if awaiting_result(state, job_info.aux, time.monotonic(), self.latency_wait):
            return None
        return state

    def _wait_until_gone(self, ids: list[str]) -> None:
        """Wait until SLURM lists none of the jobs (a cancelled or timed-out job stays COMPLETING while
        its processes get SIGTERM, the grace period and SIGKILL); at most the grace period and a minute."""
        deadline = time.monotonic() + self.settings.grace_period + 60
        while True:
            left = slurm_listed(ids)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(1)
        if left:
            self.logger.warning(f"SLURM jobs {' '.join(left)} are still listed by squeue; going on without them")

    def _run_debug_job(self, job_info: SubmittedJobInfo) -> None:
        try:
            job_info.aux["submitit_job"].submission().result()
        except Exception as e:
            self._report_failure(job_info, f"{type(e).__name__}: {e}")
        else:
            self.report_job_success(job_info)

    def _report_failure(self, job_info: SubmittedJobInfo, reason: str) -> None:
        paths = job_info.aux["submitit_job"].paths
        logs = [str(p) for p in (paths.stdout, paths.stderr) if p.exists()]
        msg = failure_message(self.cluster, job_info.external_jobid, reason, logs, paths.folder)
        self.report_job_error(job_info, msg=msg, aux_logs=logs)

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        with self.unfinished_lock:
            jobs = {j.external_jobid: j for j in [*active_jobs, *self.unfinished.values()]}
        if not jobs or self.cluster == "debug":
            return
        if self.cluster == "slurm":
            ids = sorted(jobs, key=int)
            self.logger.info(f"Cancelling SLURM jobs {' '.join(ids)}")
            result = subprocess.run(["scancel", *ids], capture_output=True, text=True)
            if result.returncode != 0:
                self.logger.error(f"scancel {' '.join(ids)} failed: {result.stderr.strip()}")
            self._wait_until_gone(ids)  # a next run must not meet their processes in the same folders
            return
        for job_info in jobs.values():
            job_info.aux["submitit_job"].cancel(check=False)
