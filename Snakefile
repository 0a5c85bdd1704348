# snn-es: spiking neural networks trained with evolution strategies.
# The stages live in workflow/rules/; `rule all` lists what the config enables. The studies
# (diagnostics_all, ablation_all, scaling, peers) are named targets outside `all`.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/snn.smk"
include: "workflow/rules/es.smk"
include: "workflow/rules/diagnostics.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/peers.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cluster.smk"


rule all:
    default_target: True
    input:
        all_targets(),
