rule run_es:
    input:
        subset=rules.materialize_subset.output.tensors,
        manifest=rules.materialize_subset.output.manifest,
        code=library(
            "data",
            "subsets",
            "encoders",
            "models",
            "es/__init__",
            "es/params",
            "es/strategy",
            "es/evaluate",
            "es/population",
            "es/run",
        ),
    output:
        log_csv="results/es/{dataset}/{encoder}/{subset}/{mode}/seed{seed}/log.csv",
        metrics="results/es/{dataset}/{encoder}/{subset}/{mode}/seed{seed}/metrics.json",
        params="results/es/{dataset}/{encoder}/{subset}/{mode}/seed{seed}/params.pt",
    log:
        "logs/run_es/{dataset}/{encoder}/{subset}/{mode}/seed{seed}.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        snn=snn_settings,
        es=es_settings,
    script:
        "../scripts/run_es.py"


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
