# ES gradient diagnostics (config section `diagnostics`): at the ES runs' initial weights,
# how well ES gradient estimates agree with the surrogate (BPTT) gradient, how noisy they
# are, and how noisy the fitness is, per sigma x population (x rank).


include: "diagnostics_helpers.smk"


rule diagnose_es:
    input:
        subset=diagnostics_subset,
        code=script_code("diagnose_es.py"),
    output:
        table="results/diagnostics/{dataset}/{encoder}/diagnostics.csv",
    log:
        "logs/diagnose_es/{dataset}/{encoder}.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        snn=dataset_snn,
        es=diagnosed_es(),
        diagnostics=diagnostics_settings(),
    script:
        "../scripts/diagnose_es.py"


rule aggregate_diagnostics:
    input:
        tables=diagnostics_targets(),
        code=script_code("aggregate_diagnostics.py"),
    output:
        table=report(
            "results/tables/es_diagnostics.csv",
            caption="../report/es_diagnostics.rst",
            category="Diagnostics",
        ),
        plot=report(
            "results/plots/es_diagnostics.png",
            caption="../report/es_diagnostics_plot.rst",
            category="Diagnostics",
        ),
    log:
        "logs/aggregate_diagnostics.log",
    conda:
        "../../envs/snn-es.yaml"
    script:
        "../scripts/aggregate_diagnostics.py"


rule diagnostics_all:
    input:
        diagnostics_outputs(),
