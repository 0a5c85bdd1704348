"""The SLURM profile against a real one-node SLURM cluster (tests/cluster/start_slurm.sh).

One submission of a tiny config through `workflow/profiles/slurm`, during which one ES run
is cancelled with `scancel` mid-way (a preemption), is compared with a local run of the same
config: every job ran as a SLURM job (sacct), the tables are byte-identical, the cancelled run
was resubmitted by the profile's `retries` and resumed from its checkpoint to the same result,
and a second submission submits nothing. A profile asking for a GPU on the GPU-less test
partition stops before submitting anything, with one line saying what to change.

Needs root and the packages `tests/cluster/start_slurm.sh install` installs (.ci/run does);
without them the tests skip and say why. Run them alone with `./uv run pytest -m cluster`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEFILE, planned_jobs, run_snakemake, tiny_config

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

START = REPO / "tests" / "cluster" / "start_slurm.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
STATE = Path(os.environ.get("SNN_ES_SLURM_STATE", "/tmp/snn-es-slurm"))
PARTITION = os.environ.get("SNN_ES_SLURM_PARTITION", "debug")
ACCOUNT = os.environ.get("SNN_ES_SLURM_ACCOUNT", "snnes")
LONG_RUN = "results/es/tinygray/repeat/small/sequential/seed0"  # the run that is cancelled
LONG_GENERATIONS = 40
CANCEL_AFTER = 4  # scancel once this generation is checkpointed: resume at a later one
INSTALL_ERR = Path(os.environ.get("SNN_ES_SLURM_INSTALL_ERR", "/tmp/snn-es-slurm-install.err"))
TIMING_COLUMNS = ("wall_s", "member_evals_per_s")  # wall-clock, differ between any two runs


def cluster_config(mirror: Path) -> dict:
    """conftest's tiny config on one dataset and one subset (the cluster run's time is mostly
    per-job start-up), no ablation, and one ES run long enough to be cancelled mid-way."""
    config = tiny_config(mirror)
    config["enabled_datasets"] = ["tinygray"]
    config["subsets"] = {"small": config["subsets"]["small"]}
    config["ablation"] = []
    # Seconds per run, a checkpoint after every generation (tiny_config's es section).
    config["es_grid"][1]["es"] = {"lr": 0.02, "generations": LONG_GENERATIONS,
                                  "population": 256, "eval_every": 10}
    return config


def cluster_profile(folder: Path, keep_gpus: bool = False) -> Path:
    """workflow/profiles/slurm with what one 2-CPU test node needs changed, nothing else.

    - account and partition of the test cluster (a user sets theirs in the profile);
    - 1 thread per job, as the local default profile gives them (same float results);
    - at most 2 GB per job (the profile sizes jobs for real datasets);
    - no GPUs (the node has none) unless ``keep_gpus``;
    - the first status check 5 s after a submission, not 40 s (the plugin then adds 10 s
      per check that sees no job finish: checks at 5, 20, 45 s suit these 15-20 s jobs).
    """
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    profile["default-resources"] = {**profile["default-resources"],
                                    "slurm_account": ACCOUNT, "slurm_partition": PARTITION,
                                    "mem_mb": min(profile["default-resources"]["mem_mb"], 2000)}
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    for resources in profile["set-resources"].values():
        if "mem_mb" in resources:
            resources["mem_mb"] = min(resources["mem_mb"], 2000)
        if not keep_gpus:
            resources.pop("gpu", None)
    profile["slurm-init-seconds-before-status-checks"] = 5
    profile["slurm-keep-successful-logs"] = True
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def slurm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SNN_ES_DATA_MIRROR"}
    env["SLURM_CONF"] = str(STATE / "etc" / "slurm.conf")
    return env


def snakemake_cmd(workdir: Path, config: dict, profile: Path, *args: str) -> list[str]:
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
            str(workdir), "--configfile", str(config_path), "--workflow-profile",
            str(profile), *args]


def sacct_jobs(since: str) -> list[dict[str, str]]:
    """The test cluster's jobs submitted since ``since``, as sacct lists them."""
    fields = ["JobIDRaw", "JobName", "State", "Comment", "Account", "Partition"]
    proc = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--starttime", since, "--endtime", "now",
         "--format", ",".join(fields)],
        capture_output=True, text=True, env=slurm_env(), timeout=60, check=True)
    return [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines() if line]


def squeue(env) -> list[tuple[str, str, str]]:
    """(job id, state, comment) of the jobs SLURM still holds."""
    proc = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    return [tuple(line.split("|", 2)) for line in proc.stdout.splitlines() if line]


def now() -> str:
    return datetime.now().strftime("%Y-%m-%dT%H:%M:%S")


def _started() -> bool:
    return subprocess.run(["bash", str(START), "status"], env=slurm_env(),
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def slurm():
    """A running test cluster: the one already up, or one started (and stopped) here."""
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="the slurm dependency group is not installed "
                               "(uv sync --group slurm)")
    missing = [tool for tool in ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct",
                                 "munged", "mariadbd") if shutil.which(tool) is None]
    if missing:
        why = INSTALL_ERR.read_text().strip() if INSTALL_ERR.exists() else (
            "`tests/cluster/start_slurm.sh install` installs them as root with apt-get "
            "(.ci/run does)")
        pytest.skip(f"SLURM is not installed here (no {', '.join(missing)}): {why}")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs its daemons as root; run the tests as root")
    already_up = _started()
    if not already_up:
        proc = subprocess.run(["bash", str(START), "start"], env=slurm_env(),
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"start_slurm.sh failed:\n{proc.stdout}\n{proc.stderr}"
    yield slurm_env()
    if not already_up:
        subprocess.run(["bash", str(START), "stop"], env=slurm_env(), timeout=120)


def _checkpointed_generation(path: Path) -> int | None:
    from snn_es.es.run import load_checkpoint
    from snn_es.io import DamagedFileError

    try:
        return load_checkpoint(path)["generation"]
    except (FileNotFoundError, DamagedFileError):  # not there yet
        return None


def cancel_when_checkpointed(workdir: Path, proc: subprocess.Popen, env,
                             timeout: float = 300) -> dict:
    """Wait until the long ES run has checkpointed generation CANCEL_AFTER, then `scancel`
    its SLURM job (a checkpoint is written atomically after every generation)."""
    checkpoint = workdir / LONG_RUN / "checkpoint.pt"
    deadline = time.monotonic() + timeout
    while (generation := _checkpointed_generation(checkpoint)) is None or \
            generation < CANCEL_AFTER:
        assert proc.poll() is None, "snakemake ended before the ES run was checkpointed"
        assert time.monotonic() < deadline, "the ES run was not checkpointed in time"
        time.sleep(0.05)
    jobs = [(job_id, state) for job_id, state, comment in squeue(env)
            if comment.startswith("rule_run_es_") and "sequential" in comment]
    assert len(jobs) == 1 and jobs[0][1] == "RUNNING", jobs
    subprocess.run(["scancel", jobs[0][0]], env=env, check=True, timeout=60)
    return {"job_id": jobs[0][0], "metrics_existed": (workdir / LONG_RUN / "metrics.json").exists()}


@pytest.fixture(scope="module")
def runs(slurm, tiny_mirror, tmp_path_factory):
    """A local run and a SLURM run (one ES job cancelled mid-way) of the same config.

    They run at the same time: the SLURM run mostly waits (job start-up, status checks).
    """
    config = cluster_config(tiny_mirror)
    local = tmp_path_factory.mktemp("local")
    timings = {}

    def local_run():
        start = time.monotonic()
        proc = run_snakemake(local, config, "all")
        timings["local_s"] = round(time.monotonic() - start)
        return proc

    local_future = ThreadPoolExecutor(1).submit(local_run)
    workdir = tmp_path_factory.mktemp("slurm")
    profile = cluster_profile(tmp_path_factory.mktemp("profile") / "slurm")
    since = now()
    time.sleep(1)  # sacct's --starttime has a resolution of seconds
    tick = time.monotonic()
    with open(workdir.parent / f"{workdir.name}.out", "w+") as out:
        proc = subprocess.Popen(snakemake_cmd(workdir, config, profile, "all"), stdout=out,
                                stderr=subprocess.STDOUT, text=True, env=slurm)
        try:
            cancelled = cancel_when_checkpointed(workdir, proc, slurm)
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        out.seek(0)
        output = out.read()
    timings["slurm_s"] = round(time.monotonic() - tick)
    assert proc.returncode == 0, output
    local_proc = local_future.result(timeout=600)
    jobs = sacct_jobs(since)
    print(f"timings: {timings}")
    return {"config": config, "local": local, "local_proc": local_proc, "workdir": workdir,
            "profile": profile, "output": output, "jobs": jobs, "cancelled": cancelled,
            "since": since}


def test_every_job_ran_as_a_slurm_job(runs):
    expected = dict(planned_jobs(runs["local_proc"]))
    expected.pop("all")  # a target-only rule: Snakemake runs it itself, no job
    jobs = runs["jobs"]
    completed = [job for job in jobs if job["State"] == "COMPLETED"]
    ran = {}
    for job in completed:  # Snakemake's comment: rule_<rule>[_wildcards_<values>]
        rule = [r for r in expected if job["Comment"] == f"rule_{r}"
                or job["Comment"].startswith(f"rule_{r}_wildcards_")]
        assert len(rule) == 1, job
        ran[rule[0]] = ran.get(rule[0], 0) + 1
    assert ran == expected
    # the cancelled attempt of the long ES run, and nothing else that did not complete
    others = [job for job in jobs if job["State"] != "COMPLETED"]
    assert [(job["JobIDRaw"], job["State"].split()[0]) for job in others] == [
        (runs["cancelled"]["job_id"], "CANCELLED")]
    assert {job["Account"] for job in jobs} == {ACCOUNT}
    assert {job["Partition"] for job in jobs} == {PARTITION}
    assert len({job["JobName"] for job in jobs}) == 1  # one Snakemake run submitted them all
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", runs["output"])
    assert sorted(submitted) == sorted(job["JobIDRaw"] for job in jobs)


def test_tables_equal_a_local_run_byte_for_byte(runs):
    for table in ("es_runs.csv", "baselines.csv", "snn_checks.csv"):
        local = (runs["local"] / "results/tables" / table).read_bytes()
        assert (runs["workdir"] / "results/tables" / table).read_bytes() == local, table


def _log_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                for row in csv.DictReader(handle)]


def test_cancelled_es_run_resumed_from_its_checkpoint_to_the_same_result(runs):
    import torch

    workdir, local = runs["workdir"], runs["local"]
    assert not runs["cancelled"]["metrics_existed"]
    output = runs["output"]
    assert "SLURM status is: 'CANCELLED'" in output
    assert "Trying to restart job" in output or "attempt 2" in output.lower(), output[-3000:]
    log = (workdir / "logs/es/tinygray/repeat/small/sequential/seed0.log").read_text()
    match = re.search(r"resuming from (\S+checkpoint\.pt) at generation (\d+)", log)
    assert match, log[-2000:]
    generation = int(match.group(2))
    print(f"resumed at generation {generation} of {LONG_GENERATIONS}")
    assert CANCEL_AFTER < generation < LONG_GENERATIONS
    assert not (workdir / LONG_RUN / "checkpoint.pt").exists()  # removed once complete
    # Bit-identical to the uninterrupted local run (timing columns aside).
    assert _log_rows(workdir / LONG_RUN / "log.csv") == _log_rows(local / LONG_RUN / "log.csv")
    assert len(_log_rows(local / LONG_RUN / "log.csv")) == LONG_GENERATIONS
    theta = torch.load(workdir / LONG_RUN / "params.pt")["theta"]
    assert torch.equal(theta, torch.load(local / LONG_RUN / "params.pt")["theta"])
    metrics = [json.loads((folder / LONG_RUN / "metrics.json").read_text())
               for folder in (workdir, local)]
    for key in ("final_test_acc", "best_test_acc", "final_train_acc", "final_fitness_mean",
                "generations", "evaluations"):
        assert metrics[0][key] == metrics[1][key], key


def test_second_run_submits_nothing(runs, slurm):
    since = now()
    time.sleep(1)
    proc = subprocess.run(snakemake_cmd(runs["workdir"], runs["config"], runs["profile"], "all"),
                          capture_output=True, text=True, env=slurm, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert planned_jobs(proc) == {}
    assert "submitted with SLURM jobid" not in proc.stdout + proc.stderr
    assert sacct_jobs(since) == []


def test_gpu_request_on_a_gpu_less_partition_stops_with_one_clear_line(slurm, tiny_mirror,
                                                                       tmp_path):
    profile = cluster_profile(tmp_path / "profile" / "slurm", keep_gpus=True)
    gpu_rules = sorted(rule for rule, res in yaml.safe_load(PROFILE.read_text())
                       ["set-resources"].items() if res.get("gpu"))
    config = cluster_config(tiny_mirror)
    since = now()
    time.sleep(1)
    proc = subprocess.run(snakemake_cmd(tmp_path, config, profile, "all"),
                          capture_output=True, text=True, env=slurm, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [line for line in text.splitlines() if "GPU requested where there is none" in line]
    assert len(lines) == 1, text
    line = lines[0]
    print(line)
    assert f"partition '{PARTITION}', which has no GPUs" in line
    # the rules of this config that ask for a GPU (run_ablation has no job here)
    for rule in ("run_es", "train_snn_bptt"):
        assert rule in gpu_rules and f"{rule} (gpu=1)" in line
    assert "run_ablation" not in line
    assert "set `gpu: 0`" in line and "slurm_partition" in line
    assert "No job was submitted" in line
    assert "Traceback" not in text
    assert sacct_jobs(since) == []  # nothing submitted, so nothing left pending
    assert squeue(slurm) == []
