# Helpers of the `diagnostics` stage (its rules are in diagnostics.smk).

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
    return {
        k: es[k]
        for k in (
            "fitness",
            "init_conv_scale",
            "init_readout_scale",
            "noise_scale",
            "spike_noise",
        )
    }


def diagnostics_outputs():
    if not diagnostics_enabled():
        return []
    return [str(path) for path in rules.aggregate_diagnostics.output]
