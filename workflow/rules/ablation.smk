# ES ablation (config section `ablation`): one ES run per variant, all on the same dataset,
# encoder, subset and seed; each variant changes `es` and/or `snn` settings of the default.


rule run_ablation:
    input:
        subset=ablation_subset(),
        manifest=ablation_subset_manifest(),
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
        log_csv="results/ablation/{variant}/log.csv",
        metrics="results/ablation/{variant}/metrics.json",
        params="results/ablation/{variant}/params.pt",
    log:
        "logs/run_ablation/{variant}.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        snn=ablation_snn,
        es=ablation_es,
        run=ablation_run(),
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
    params:
        variants=ablation_variant_names(),
    script:
        "../scripts/aggregate_ablation.py"


rule ablation_all:
    input:
        ablation_outputs(),
