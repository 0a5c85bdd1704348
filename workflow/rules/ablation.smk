# ES ablation (config section `ablation`): studies of one ES run per variant, all variants
# of a study on the same dataset, encoder, subset and seed; each variant changes `es`,
# `snn` or the encoder of the study's base run.


rule run_ablation:
    input:
        subset=ablation_subset,
        manifest=ablation_subset_manifest,
        code=library(
            "data",
            "subsets",
            "encoders",
            "models",
            "es/__init__",
            "es/params",
            "es/strategy",
            "es/population",
            "es/evaluate",
            "es/run",
        ),
    output:
        log_csv="results/ablation/{study}/{variant}/log.csv",
        metrics="results/ablation/{study}/{variant}/metrics.json",
        params="results/ablation/{study}/{variant}/params.pt",
    log:
        "logs/run_ablation/{study}/{variant}.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        snn=ablation_snn,
        es=ablation_es,
        run=ablation_run,
        changes=ablation_changes,
    script:
        "../scripts/run_ablation.py"


rule aggregate_ablation:
    input:
        runs=ablation_targets(),
        code=library("report"),
    output:
        table=report(
            "results/tables/es_ablation.csv",
            caption="../report/es_ablation.rst",
            category="Ablation",
        ),
        plot=report(
            "results/plots/es_ablation.png",
            caption="../report/es_ablation_plot.rst",
            category="Ablation",
        ),
    log:
        "logs/aggregate_ablation.log",
    conda:
        "../../envs/snn-es.yaml"
    script:
        "../scripts/aggregate_ablation.py"


rule ablation_all:
    input:
        ablation_outputs(),
