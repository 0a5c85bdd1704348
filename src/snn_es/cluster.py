"""SLURM checks made before any job is submitted.

A job that asks for a GPU on a partition without one is rejected by ``sbatch`` (one error per
job, deep in Snakemake's output) or, on some clusters, waits in the queue forever. With
Snakemake's SLURM executor the workflow instead stops before submitting anything, with one
line naming the rules, the partition and the resource to change.

The pure functions below take ``sinfo``'s output and the jobs' resources; ``check_gpu_requests``
is the Snakemake glue (an ``onstart`` hook: it runs once, in the main process, after the DAG
is built and before the first submission; never for dry runs).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from snn_es.errors import UserError


class ClusterResourceError(UserError, RuntimeError):
    """Jobs ask the cluster for something it cannot give; nothing was submitted."""


@dataclass(frozen=True)
class Partitions:
    gpus: dict[str, bool]  # partition name -> has at least one node with a GPU gres
    default: str | None  # the partition sbatch uses when none is given


# A gres list as sinfo's %G prints it: "(null)", "gpu:a100:4(S:0-1),shard:8", "gpu:2" ...
_GPU_GRES = re.compile(r"(?:^|,)gpu(?::|\(|,|$)")


def parse_sinfo(text: str) -> Partitions:
    """Parse ``sinfo -h -o '%P|%G'`` (one line per partition and node configuration)."""
    gpus: dict[str, bool] = {}
    default = None
    for line in text.splitlines():
        if "|" not in line:
            continue
        name, gres = (part.strip() for part in line.split("|", 1))
        if name.endswith("*"):
            name = name[:-1]
            default = name
        gpus[name] = gpus.get(name, False) or bool(_GPU_GRES.search(gres))
    return Partitions(gpus, default)


def query_partitions(sinfo: str = "sinfo", timeout: float = 30) -> Partitions | None:
    """The cluster's partitions, or None when ``sinfo`` is missing or does not answer."""
    if shutil.which(sinfo) is None:
        return None
    try:
        proc = subprocess.run([sinfo, "-h", "-o", "%P|%G"], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return parse_sinfo(proc.stdout)


def _as_int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):  # unset, or not known before the job runs
        return default


def requested_gpus(resources: Mapping) -> tuple[int, str]:
    """GPUs a job asks for through the SLURM plugin's resources, and the resource that asks.

    The plugin turns ``gpu: N`` (optionally with ``gpu_model``) into ``--gpus`` and
    ``gres: gpu[:type]:N`` into ``--gres``.
    """
    gpu, model, gres = resources.get("gpu"), resources.get("gpu_model"), resources.get("gres")
    if model:
        return _as_int(gpu, 1) or 1, f"gpu_model={model}"
    if _as_int(gpu) > 0:
        return _as_int(gpu), f"gpu={gpu}"
    if isinstance(gres, str) and gres.split(":", 1)[0] == "gpu":
        count = gres.rsplit(":", 1)[-1] if ":" in gres else "1"
        return _as_int(count.rstrip("TGM"), 1) or 1, f"gres={gres}"
    return 0, ""


def gpu_problem(jobs: Iterable[tuple[str, Mapping]], partitions: Partitions) -> str | None:
    """One line describing the GPU requests this cluster cannot serve, or None.

    ``jobs`` yields (rule name, resources). A job without ``slurm_partition`` goes to the
    default partition. Unknown partitions are left to sbatch, which names them itself.
    """
    wrong: dict[str, dict[str, str]] = {}  # partition -> rule -> requesting resource
    for rule, resources in jobs:
        count, resource = requested_gpus(resources)
        if count == 0:
            continue
        partition = resources.get("slurm_partition") or partitions.default
        if not partition or partition not in partitions.gpus or partitions.gpus[partition]:
            continue
        wrong.setdefault(str(partition), {})[rule] = resource
    if not wrong:
        return None
    parts = []
    for partition, rules in sorted(wrong.items()):
        asks = ", ".join(f"{rule} ({resource})" for rule, resource in sorted(rules.items()))
        parts.append(f"{asks} on partition '{partition}', which has no GPUs")
    rules = sorted({rule for rules in wrong.values() for rule in rules})
    with_gpus = sorted(name for name, has in partitions.gpus.items() if has)
    where = (f"partitions with GPUs: {', '.join(with_gpus)}" if with_gpus
             else "this cluster has no partition with GPUs")
    return (
        f"GPU requested where there is none: {'; '.join(parts)}. In the workflow profile's "
        f"set-resources, set `gpu: 0` for {', '.join(rules)} to run on CPUs, or set their "
        f"`slurm_partition` to a partition with GPUs ({where}). No job was submitted."
    )


def _uses_slurm(workflow) -> bool:
    plugin = getattr(workflow, "executor_plugin", None)
    name = getattr(plugin, "cli_prefix", None) or getattr(plugin, "name", "") or ""
    return name.replace("snakemake-executor-plugin-", "") == "slurm"


def check_gpu_requests(workflow, partitions: Partitions | None = None) -> None:
    """Snakemake ``onstart`` hook: stop before any submission if a job to run asks for a GPU
    on a partition without one. Does nothing without the SLURM executor or ``sinfo``."""
    if not _uses_slurm(workflow) or getattr(workflow, "remote_exec", False):
        return
    partitions = partitions or query_partitions()
    if partitions is None:
        return
    jobs = ((job.rule.name, job.resources) for job in workflow.dag.needrun_jobs())
    message = gpu_problem(jobs, partitions)
    if message:
        raise ClusterResourceError(message)
