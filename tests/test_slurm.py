"""Run Snakemake through the submitit executor plugin on a real SLURM cluster.

The cluster comes from the session fixture in slurm_fixtures.py (imported by
conftest.py). Every workflow here is written into a temp dir by its test.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = REPO / "plugins" / "snakemake-executor-plugin-submitit" / "src"
PYTHON = sys.executable

TINY_SNAKEFILE = """
N = 4

rule all:
    input: "results/summary.txt"

rule square:
    output: "results/square_{i}.txt"
    threads: 1
    resources:
        mem_mb=256,
        runtime=5,
        slurm_partition="debug",
        slurm_extra="--comment=tiny-square --nice 5",
    shell: "echo $(( {wildcards.i} * {wildcards.i} )) > {output}"

rule summary:
    input: expand("results/square_{i}.txt", i=range(N))
    output: "results/summary.txt"
    resources: mem_mb=256, runtime=5
    run:
        values = [int(open(f).read()) for f in input]
        with open(output[0], "w") as out:
            out.write(" ".join(map(str, values)) + f" sum={sum(values)}\\n")
"""

# A deterministic "training" loop: STEPS steps of SLEEP seconds, an atomic
# checkpoint every EVERY steps, resumes from the checkpoint when re-run, and
# logs every start (SLURM job id, restart count, starting step) to starts.log.
TRAIN_SCRIPT = """
import hashlib, json, os, sys, time
from pathlib import Path

ckpt_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
steps, every, sleep = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
ckpt_dir.mkdir(parents=True, exist_ok=True)
ckpt = ckpt_dir / "checkpoint.json"
step, state = 0, "seed"
if ckpt.exists():
    saved = json.loads(ckpt.read_text())
    step, state = saved["step"], saved["state"]
with open(ckpt_dir / "starts.log", "a") as log:
    job = os.environ.get("SLURM_JOB_ID", "-")
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    log.write(f"{job} {restarts} {step}\\n")
while step < steps:
    time.sleep(sleep)
    state = hashlib.sha256(f"{state}:{step}".encode()).hexdigest()
    step += 1
    if step % every == 0 or step == steps:
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step, "state": state}))
        os.replace(tmp, ckpt)
out.write_text(state + "\\n")
"""
TRAIN_STEPS, TRAIN_EVERY, TRAIN_SLEEP = 70, 5, 0.5

TRAIN_SNAKEFILE = f"""
rule all:
    input: "results/timelimit.txt", "results/preempt.txt"

rule train:
    output: "results/{{name}}.txt"
    resources:
        runtime=lambda wildcards: 1 if wildcards.name == "timelimit" else 10,
        mem_mb=256,
    shell:
        "{PYTHON} train.py ckpt/{{wildcards.name}} {{output}} "
        "{TRAIN_STEPS} {TRAIN_EVERY} {TRAIN_SLEEP}"
"""

FLAKY_SNAKEFILE = """
rule all:
    input: "results/flaky.txt"

rule flaky:
    output: "results/flaky.txt"
    resources: runtime=5, mem_mb=256
    shell:
        "if [ -e first_attempt.marker ]; then echo recovered > {output}; "
        "else touch first_attempt.marker; echo 'flaky: failing on purpose' >&2; exit 3; fi"
"""


def snakemake_cmd(*args: str) -> list:
    return [
        PYTHON,
        "-m",
        "snakemake",
        "--jobs",
        "4",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "5",
        *args,
    ]


def snakemake_env() -> dict:
    """os.environ with the package and the plugin importable even if they aren't installed."""
    paths = [str(REPO / "src"), str(PLUGIN_SRC), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


def run_snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(*args),
        cwd=workdir,
        env=snakemake_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def make_workflow(path: Path, snakefile: str, files: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Snakefile").write_text(snakefile)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


def read_results(workdir: Path) -> dict:
    return {p.name: p.read_text() for p in sorted((workdir / "results").glob("*.txt"))}


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"snakemake exited {proc.returncode}:\n{proc.stdout[-6000:]}"


def sacct_states(job_id: str) -> list:
    """All states of a job in sacct, including those of runs before requeues."""
    out = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


@pytest.fixture(scope="module")
def tiny_expected(tmp_path_factory) -> dict:
    """Outputs of the tiny workflow run by plain Snakemake (local executor)."""
    local = make_workflow(tmp_path_factory.mktemp("tiny-local"), TINY_SNAKEFILE)
    assert_ok(run_snakemake(local, "--cores", "2"))
    results = read_results(local)
    assert results["summary.txt"] == "0 1 4 9 sum=14\n"
    return results


def test_tiny_workflow_on_slurm_matches_local_run(slurm_cluster, tiny_expected, tmp_path):
    workdir = make_workflow(tmp_path / "slurm", TINY_SNAKEFILE)

    proc = run_snakemake(workdir, "--executor", "submitit", "--submitit-cluster", "slurm")

    assert_ok(proc)
    assert read_results(workdir) == tiny_expected
    assert "submitted as submitit slurm job" in proc.stdout
    logs = list((workdir / ".snakemake" / "submitit").glob("*/*_0_log.out"))
    assert len(logs) == 5, "one submitit log per SLURM job (4 squares + summary)"

    scripts = (workdir / ".snakemake" / "submitit").glob("*/*_submission.sh")
    square = next(p for p in scripts if "#SBATCH --job-name=square:i=" in p.read_text())
    script = square.read_text()
    for option in ("--cpus-per-task=1", "--mem=256M", "--time=5", "--partition=debug"):
        assert f"#SBATCH {option}\n" in script, (option, script)
    for option in ("--requeue", "--signal=USR2@180", "--comment=tiny-square", "--nice=5"):
        assert f"#SBATCH {option}\n" in script, (option, script)
    job_id = square.name.split("_")[0]
    accounting = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "Partition,Timelimit,ReqMem,ReqCPUS", "-j", job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert accounting == ["debug|00:05:00|256M|1"], accounting


def test_submitit_local_cluster_matches_local_run(tiny_expected, tmp_path):
    workdir = make_workflow(tmp_path / "submitit-local", TINY_SNAKEFILE)

    proc = run_snakemake(workdir, "--executor", "submitit", "--submitit-cluster", "local")

    assert_ok(proc)
    assert "submitted as submitit local job" in proc.stdout
    assert read_results(workdir) == tiny_expected


def wait_until(condition, what: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (code {proc.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def checkpoint_step(ckpt_dir: Path) -> int:
    try:
        return json.loads((ckpt_dir / "checkpoint.json").read_text())["step"]
    except FileNotFoundError:
        return -1


def starts(ckpt_dir: Path) -> list:
    """(slurm job id, restart count, starting step) for each start of the training."""
    path = ckpt_dir / "starts.log"
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]


def test_timeout_and_preemption_requeue_and_resume(slurm_cluster, tmp_path):
    """A job past its time limit and a preempted job are requeued and resume.

    "timelimit" has a 1-minute limit but needs more: SLURM sends SIGUSR2 30s
    before the limit (up to 60s earlier, at its periodic check), submitit
    requeues it. "preempt" gets SIGUSR2 from ``scancel --signal`` (submitit's
    checkpoint-and-requeue path), then after resuming a ``scontrol requeue``
    (SIGTERM, SLURM requeues it itself). Both must end with the result of an
    uninterrupted run.
    """
    reference = make_workflow(tmp_path / "reference", "", {"train.py": TRAIN_SCRIPT})
    subprocess.run(
        [PYTHON, "train.py", "ckpt", "out.txt", str(TRAIN_STEPS), str(TRAIN_EVERY), "0"],
        cwd=reference,
        check=True,
    )
    expected = (reference / "out.txt").read_text()
    workdir = make_workflow(tmp_path / "slurm", TRAIN_SNAKEFILE, {"train.py": TRAIN_SCRIPT})
    preempt = workdir / "ckpt" / "preempt"
    args = (
        "--executor",
        "submitit",
        "--submitit-signal-delay",
        "30",
        "--submitit-grace-period",
        "10",
        "--submitit-max-requeues",
        "8",
    )
    log_path = tmp_path / "snakemake.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            snakemake_cmd(*args),
            cwd=workdir,
            env=snakemake_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: checkpoint_step(preempt) >= 10, "preempt to reach step 10", proc)
            job_id = starts(preempt)[0][0]
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)

            wait_until(lambda: len(starts(preempt)) >= 2, "preempt to restart", proc)
            resumed_at = int(starts(preempt)[1][2])
            wait_until(
                lambda: checkpoint_step(preempt) >= resumed_at + 10,
                "preempt to progress after its restart",
                proc,
            )
            subprocess.run(["scontrol", "requeue", job_id], check=True)

            proc.wait(timeout=420)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 0, f"snakemake exited {proc.returncode}:\n{output[-6000:]}"
    assert read_results(workdir) == {"preempt.txt": expected, "timelimit.txt": expected}

    for name, min_starts in (("preempt", 3), ("timelimit", 2)):
        runs = starts(workdir / "ckpt" / name)
        assert len(runs) >= min_starts, f"{name} was not requeued enough: {runs}"
        assert len({job for job, _, _ in runs}) == 1, f"{name} must keep its SLURM job id"
        restarts = [int(r) for _, r, _ in runs]
        assert restarts == sorted(set(restarts)), f"SLURM_RESTART_COUNT must grow: {runs}"
        steps = [int(s) for _, _, s in runs]
        assert steps[0] == 0 and steps[-1] > 0, f"{name} did not resume: {runs}"
        assert steps == sorted(steps), f"{name} lost progress: {runs}"
        assert "REQUEUED" in sacct_states(runs[0][0]), sacct_states(runs[0][0])


def test_failed_job_reports_logs_and_is_retried(slurm_cluster, tmp_path):
    workdir = make_workflow(tmp_path / "flaky", FLAKY_SNAKEFILE)

    proc = run_snakemake(workdir, "--executor", "submitit", "--retries", "1")

    assert_ok(proc)
    assert read_results(workdir) == {"flaky.txt": "recovered\n"}
    assert "Error in rule flaky" in proc.stdout
    error_logs = list((workdir / ".snakemake" / "submitit").glob("*/*_0_log.err"))
    assert len(error_logs) == 2, "one SLURM job per attempt"
    failed_log = next(p for p in error_logs if "failing on purpose" in p.read_text())
    assert str(failed_log) in proc.stdout, "the error report names the job's log file"
    assert "exited with code" in failed_log.read_text()


# A job that takes a few seconds to exit after SIGTERM (still writing, as a training saving its checkpoint
# would), and records at each start whether the previous attempt's process had exited by then.
SLOW_EXIT_SCRIPT = """
import signal, sys, time
from pathlib import Path

log, out = Path("attempts.log"), Path(sys.argv[1])
first = not log.exists()
with log.open("a") as f:
    f.write(f"start previous_exited={Path('exited').exists()}\\n")
if first:
    def on_term(*_):
        time.sleep(4)
        Path("exited").write_text("")
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    Path("running").write_text("")
    time.sleep(300)
out.write_text("done\\n")
"""

SLOW_EXIT_SNAKEFILE = f"""
rule all:
    input: "results/slow.txt"

rule slow:
    output: "results/slow.txt"
    resources: runtime=10, mem_mb=256
    shell: "{PYTHON} slow.py {{output}}"
"""


def test_a_cancelled_job_has_exited_before_its_retry_starts(slurm_cluster, tmp_path):
    """scancel of a running job: SLURM lists it as COMPLETING while its process still writes; Snakemake's
    retry (a new SLURM job on the same outputs) starts only once the old job is gone from squeue."""
    workdir = make_workflow(tmp_path / "cancel", SLOW_EXIT_SNAKEFILE, {"slow.py": SLOW_EXIT_SCRIPT})
    proc = subprocess.Popen(
        snakemake_cmd("--executor", "submitit", "--retries", "1"),
        cwd=workdir,
        env=snakemake_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: (workdir / "running").exists(), "the job to run", proc)
        ids = subprocess.run(["squeue", "-h", "-o", "%i", "--name", "slow"], capture_output=True, text=True)
        assert len(ids.stdout.split()) == 1, ids.stdout
        subprocess.run(["scancel", ids.stdout.strip()], check=True)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert (workdir / "attempts.log").read_text().splitlines() == [
        "start previous_exited=False",
        "start previous_exited=True",
    ]
    assert read_results(workdir) == {"slow.txt": "done\n"}
