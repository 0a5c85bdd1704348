# Helpers of the `peers` stage (its rules are in peers.smk): the side-by-side of the
# project's ES with EvoTorch's SNES and PGPE (config section `peers`).

from snn_es.config import PEER_IMPLEMENTATIONS, peer_runs, same_es_run

PEER_RUNS = peer_runs(config)
PEER_SPEED = (config.get("peers") or {}).get("speed")  # null: no speed table


def peer_spec(wildcards):
    """The run's canonical spec: implementation, dataset, encoder, subset, seed, snn, es
    (+ mode for snn_es, + evotorch for EvoTorch's strategies)."""
    return PEER_RUNS[f"peers/{wildcards.implementation}/seed{wildcards.seed}"]


def peer_subset(wildcards):
    spec = peer_spec(wildcards)
    return {
        "subset": rules.materialize_subset.output.tensors.format(**spec),
        "manifest": rules.materialize_subset.output.manifest.format(**spec),
    }


def peer_target(spec):
    """The metrics of one peer row: a grid run or scaling point with exactly the project's
    settings where there is one (REUSABLE_RUNS, es_helpers.smk), else its own run_peer job.
    """
    same = same_es_run(spec, REUSABLE_RUNS)
    if same is not None:
        return rules.run_es.output.metrics.format(run=same)
    return rules.run_peer.output.metrics.format(
        implementation=spec["implementation"], seed=spec["seed"]
    )


def peer_targets():
    return [peer_target(spec) for spec in PEER_RUNS.values()]


def peer_outputs():
    if not PEER_RUNS:
        return []
    return [str(path) for path in rules.aggregate_peers.output]


def peer_speed_specs():
    """implementation -> its spec of the first seed: what `benchmark_peers` times."""
    if not PEER_RUNS:
        return {}
    seed = config["peers"]["seeds"][0]
    return {
        spec["implementation"]: spec
        for spec in PEER_RUNS.values()
        if spec["seed"] == seed
    }


def peer_speed_subset(wildcards):
    spec = next(iter(peer_speed_specs().values()))
    return {"subset": rules.materialize_subset.output.tensors.format(**spec)}


def peer_speed_outputs():
    """The speed table, where `peers.speed` is set."""
    if not PEER_RUNS or not PEER_SPEED:
        return []
    return [str(rules.benchmark_peers.output.table)]
