# ES gradient diagnostics (config section `diagnostics`): at the ES runs' initial weights,
# how well ES gradient estimates agree with the surrogate (BPTT) gradient, how noisy they
# are, and how noisy the fitness is, per sigma x population (x rank).

from snn_es.config import es_settings


def diagnostics_enabled():
    return bool(config.get("diagnostics", {}).get("grid"))


def diagnostics_targets():
    """Per-job tables of the ES gradient diagnostics (none without a `diagnostics` section)."""
    if not diagnostics_enabled():
        return []
    targets = []
    for grid in config["diagnostics"]["grid"]:
        targets += expand(
            rules.diagnose_es.output.table,
            dataset=grid["datasets"],
            encoder=grid["encoders"],
        )
    return sorted(set(targets))


def diagnostics_subset(wildcards):
    """The diagnostics read the training images of the configured subset."""
    return rules.materialize_subset.output.tensors.format(
        dataset=wildcards.dataset, subset=config["diagnostics"]["subset"]
    )


def diagnostics_settings():
    """The `diagnostics` section without its job list: what every job computes."""
    return {k: v for k, v in section("diagnostics").items() if k != "grid"}


def diagnosed_es():
    """The `es` keys the diagnostics depend on (the sweep sets population, sigma, rank)."""
    es = es_settings(config)
    return {k: es[k] for k in ("fitness", "init_readout_scale", "noise_scale", "spike_noise")}


def diagnostics_outputs():
    if not diagnostics_enabled():
        return []
    return [str(path) for path in rules.aggregate_diagnostics.output]


rule diagnose_es:
    input:
        subset=diagnostics_subset,
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
            "es/diagnostics",
            "lif",
            "settings",
        ),
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
        code=library("report", "diagnostics_report"),
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
