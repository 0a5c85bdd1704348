# Compute-scaling study (config section `scaling`; target `scaling`, not part of `all`):
# test accuracy against member-image evaluations, several allocations of each budget.
# Every point is an ES run (rule run_es).


include: "scaling_helpers.smk"


use rule run_es as run_scaling with:
    wildcard_constraints:
        run=id_pattern(SCALING_RUNS),


rule aggregate_scaling:
    input:
        runs=scaling_targets(),
        references=scaling_references(),
        code=script_code("aggregate_scaling.py"),
    output:
        table=report(
            "results/tables/es_scaling.csv",
            caption="../report/es_scaling.rst",
            category="Scaling",
        ),
        plot=report(
            "results/plots/es_scaling.png",
            caption="../report/es_scaling_plot.rst",
            category="Scaling",
        ),
    log:
        "logs/aggregate_scaling.log",
    conda:
        "../../envs/snn-es.yaml"
    script:
        "../scripts/aggregate_scaling.py"


rule scaling:
    input:
        scaling_outputs(),
