# ES ablation (config section `ablation`): studies of one chunked ES run per variant, all
# variants of a study on the same dataset, subset and seed; each variant changes `es`,
# `snn` or the encoder of the study's base. Study runs are ES runs (rule run_es).


include: "ablation_helpers.smk"


use rule run_es as run_ablation with:
    wildcard_constraints:
        run=id_pattern(STUDY_RUNS),


rule aggregate_ablation:
    input:
        runs=ablation_targets(),
        code=script_code("aggregate_ablation.py"),
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
        labels=ablation_labels(),
    script:
        "../scripts/aggregate_ablation.py"


rule ablation_all:
    input:
        ablation_outputs(),
