# ES runs. The config expands once into run id -> canonical spec (snn_es.config); the run id
# is the run's folder under results/. One rule and one job script serve every run: the grid
# here, the studies (ablation.smk) through `use rule run_es as ... with:`.


include: "es_helpers.smk"


rule run_es:
    input:
        unpack(run_subset),
        code=script_code("run_es.py"),
    output:
        log_csv="results/{run}/log.csv",
        metrics="results/{run}/metrics.json",
        params="results/{run}/params.pt",
    log:
        "logs/{run}.log",  # logs/es/... and, for the studies, logs/ablation/...
    wildcard_constraints:
        run=id_pattern(GRID_RUNS),
    priority: run_priority
    conda:
        "../../envs/snn-es.yaml"
    resources:
        # speed only, never results: resources are no rerun trigger
        chunk_size=EXECUTION.chunk_size,
        image_chunk=EXECUTION.image_chunk,
        fused=int(EXECUTION.fused),
        checkpoint_every=EXECUTION.checkpoint_every,
    params:
        spec=run_spec,
    script:
        "../scripts/run_es.py"


# The readout-fit reference of every grid run: a linear readout fitted by gradient descent
# on the features of the run's frozen initial network (snn_es.readout_fit; not ES).
rule fit_readout:
    input:
        subset=lambda wildcards: run_subset(wildcards)["subset"],
        code=script_code("fit_readout.py"),
    output:
        metrics="results/{run}/readout_fit.json",
    log:
        "logs/{run}.readout_fit.log",
    wildcard_constraints:
        run=id_pattern(GRID_RUNS),
    conda:
        "../../envs/snn-es.yaml"
    params:
        spec=run_spec,
        fit=readout_fit_settings(config),
    script:
        "../scripts/fit_readout.py"


# Named slices of the ES grid, kept from the earlier scripts' Makefile.
rule es_subset:
    input:
        es_targets(modes=["sequential"]),


rule es_parallel:
    input:
        es_targets(modes=["chunked"]),


rule mnist_es:
    input:
        es_targets(datasets=["mnist"]),


rule es_repeat_small:
    input:
        es_targets(datasets=["cifar10"], encoders=["repeat"], subsets=["small"]),


rule es_repeat_big:
    input:
        es_targets(datasets=["cifar10"], encoders=["repeat"], subsets=["big"]),


rule es_norepeat_big:
    input:
        es_targets(datasets=["cifar10"], encoders=["poisson"], subsets=["big"]),
