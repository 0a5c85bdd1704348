"""The GPU-request check made before submitting to SLURM (src/snn_es/cluster.py), without a
cluster: sinfo's output and the jobs' resources are given. tests/test_cluster.py runs it
against a real one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from snn_es.cluster import (ClusterResourceError, Partitions, check_gpu_requests, gpu_problem,
                            parse_sinfo, requested_gpus)

SINFO = """\
cpu*|(null)
gpu|gpu:a100:4(S:0-1)
gpu|(null)
mixed|gpu:2,shard:8
shards|shard:8
"""


def test_parse_sinfo_finds_the_default_and_the_partitions_with_gpus():
    parts = parse_sinfo(SINFO)
    assert parts.default == "cpu"
    # a partition has GPUs when any of its node configurations has a gpu gres
    assert parts.gpus == {"cpu": False, "gpu": True, "mixed": True, "shards": False}
    assert parse_sinfo("") == Partitions({}, None)


@pytest.mark.parametrize("resources, expected", [
    ({}, (0, "")),
    ({"gpu": 0}, (0, "")),
    ({"gpu": 1}, (1, "gpu=1")),
    ({"gpu": 2, "gpu_model": "a100"}, (2, "gpu_model=a100")),
    ({"gpu_model": "a100"}, (1, "gpu_model=a100")),
    ({"gres": "gpu:1"}, (1, "gres=gpu:1")),
    ({"gres": "gpu:tesla:2"}, (2, "gres=gpu:tesla:2")),
    ({"gres": "gpu"}, (1, "gres=gpu")),
    ({"gres": "shard:4"}, (0, "")),
    ({"gpu": "<TBD>"}, (0, "")),  # not known before the job runs: not judged
])
def test_requested_gpus(resources, expected):
    assert requested_gpus(resources) == expected


def test_no_problem_when_gpus_go_where_there_are_gpus():
    parts = parse_sinfo(SINFO)
    jobs = [("run_es", {"gpu": 1, "slurm_partition": "gpu"}),
            ("train_cnn", {"mem_mb": 4000}),  # default partition, no GPU asked
            ("x", {"gpu": 1, "slurm_partition": "nosuch"})]  # unknown: sbatch names it
    assert gpu_problem(jobs, parts) is None


def test_one_line_names_rules_partition_resource_and_fix():
    parts = parse_sinfo(SINFO)
    jobs = [("run_es", {"gpu": 1}), ("run_es", {"gpu": 1}),
            ("train_snn_bptt", {"gres": "gpu:1"}),
            ("run_ablation", {"gpu": 1, "slurm_partition": "shards"}),
            ("train_cnn", {})]
    message = gpu_problem(jobs, parts)
    assert "\n" not in message
    assert message == (
        "GPU requested where there is none: run_es (gpu=1), train_snn_bptt (gres=gpu:1) on "
        "partition 'cpu', which has no GPUs; run_ablation (gpu=1) on partition 'shards', "
        "which has no GPUs. In the workflow profile's set-resources, set `gpu: 0` for "
        "run_ablation, run_es, train_snn_bptt to run on CPUs, or set their `slurm_partition` "
        "to a partition with GPUs (partitions with GPUs: gpu, mixed). No job was submitted.")


def test_a_cluster_without_gpus_says_so():
    message = gpu_problem([("run_es", {"gpu": 1})], parse_sinfo("debug*|(null)\n"))
    assert "this cluster has no partition with GPUs" in message


def _workflow(plugin_prefix, jobs, remote=False):
    dag = SimpleNamespace(needrun_jobs=lambda: [
        SimpleNamespace(rule=SimpleNamespace(name=name), resources=res) for name, res in jobs])
    return SimpleNamespace(executor_plugin=SimpleNamespace(cli_prefix=plugin_prefix),
                           remote_exec=remote, dag=dag)


def test_the_hook_only_checks_slurm_submissions():
    parts = parse_sinfo("debug*|(null)\n")
    jobs = [("run_es", {"gpu": 1})]
    with pytest.raises(ClusterResourceError, match="run_es \\(gpu=1\\) on partition 'debug'"):
        check_gpu_requests(_workflow("slurm", jobs), parts)
    check_gpu_requests(_workflow("local", jobs), parts)  # local runs ignore `gpu`
    check_gpu_requests(_workflow("slurm", jobs, remote=True), parts)  # inside a job
    check_gpu_requests(_workflow("slurm", [("run_es", {"gpu": 0})]), parts)
