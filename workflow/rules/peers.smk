# ES side by side with an established library (config section `peers`; target `peers`,
# not part of `all`). Every implementation trains the same SNN on the same subset, from the
# same initial weights, on the same minibatches and spikes, at the same member-image budget:
# `snn_es` is the project's own ES (run_es, the grid's flip_delta evaluator; `snn_es_chunked`
# the same with the chunked one), `evotorch_snes` / `evotorch_pgpe`
# are EvoTorch's strategies on the project's batched forward (snn_es.peers). EvoTorch is an
# optional dependency: `./uv run --group peers snakemake --cores 2 peers`.


include: "peers_helpers.smk"


rule run_peer:
    input:
        unpack(peer_subset),
        code=script_code("run_peer.py"),
    output:
        log_csv="results/peers/{implementation}/seed{seed}/log.csv",
        metrics="results/peers/{implementation}/seed{seed}/metrics.json",
    log:
        "logs/peers/{implementation}/seed{seed}.log",
    wildcard_constraints:
        implementation="|".join(PEER_IMPLEMENTATIONS),
        seed=r"\d+",
    conda:
        "../../envs/snn-es-peers.yaml"
    resources:
        # speed only, never results (as in run_es)
        chunk_size=EXECUTION.chunk_size,
        image_chunk=EXECUTION.image_chunk,
        fused=int(EXECUTION.fused),
        checkpoint_every=EXECUTION.checkpoint_every,
    params:
        spec=peer_spec,
    script:
        "../scripts/run_peer.py"


rule aggregate_peers:
    input:
        runs=peer_targets(),
        code=script_code("aggregate_peers.py"),
    output:
        table=report(
            "results/tables/es_peers.csv",
            caption="../report/es_peers.rst",
            category="Peers",
        ),
        plot=report(
            "results/plots/es_peers.png",
            caption="../report/es_peers_plot.rst",
            category="Peers",
        ),
    log:
        "logs/aggregate_peers.log",
    conda:
        "../../envs/snn-es.yaml"
    script:
        "../scripts/aggregate_peers.py"


# Speed side by side (config `peers.speed`): the runs above are timed wherever and whenever
# each ran, so every implementation is also timed here, in one job, in rotating rounds.
rule benchmark_peers:
    input:
        unpack(peer_speed_subset),
        code=script_code("benchmark_peers.py"),
    output:
        table=report(
            "results/tables/es_peers_speed.csv",
            caption="../report/es_peers_speed.rst",
            category="Peers",
        ),
    log:
        "logs/benchmark_peers.log",
    conda:
        "../../envs/snn-es-peers.yaml"
    resources:
        # speed only, never results (as in run_es)
        chunk_size=EXECUTION.chunk_size,
        image_chunk=EXECUTION.image_chunk,
        fused=int(EXECUTION.fused),
        checkpoint_every=EXECUTION.checkpoint_every,
    params:
        specs=peer_speed_specs(),
        speed=PEER_SPEED,
    script:
        "../scripts/benchmark_peers.py"


rule peers:
    input:
        peer_outputs(),
        peer_speed_outputs(),
