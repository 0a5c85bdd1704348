# Helpers shared by the rules: config checking, wildcard values, target lists.
# Rules call these by name (no lambdas inside rules).

import re
from pathlib import Path

from snn_es.config import ENCODERS as KNOWN_ENCODERS, ConfigError, check_config

try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as error:
    raise WorkflowError(str(error)) from None

DATASETS = config["enabled_datasets"]
SUBSETS = list(config["subsets"])

# The library modules a rule imports are part of its inputs, so editing one reruns exactly
# the stages that use it (Snakemake compares small files by checksum, not only by mtime).
LIBRARY = Path(workflow.basedir) / "src" / "snn_es"
SHARED_MODULES = ("__init__", "io", "seeding", "errors", "job")

ENCODERS = config["encoders"]
ES_MODES = ("sequential", "chunked")


# Ablation study and variant names (regex-escaped; "(?!)" matches nothing).
ABLATION_STUDIES = "|".join(re.escape(e["study"]) for e in config.get("ablation", []))
ABLATION_VARIANTS = "|".join(
    re.escape(name) for e in config.get("ablation", []) for name in e["variants"]
)


wildcard_constraints:
    dataset="|".join(DATASETS),
    subset="|".join(SUBSETS),
    encoder="|".join(KNOWN_ENCODERS),
    mode="|".join(ES_MODES),
    seed=r"\d+",
    study=ABLATION_STUDIES or "(?!)",
    variant=ABLATION_VARIANTS or "(?!)",


def library(*modules):
    return [str(LIBRARY / f"{name}.py") for name in SHARED_MODULES + modules]


def dataset_entry(wildcards):
    return config["datasets"][wildcards.dataset]


def subset_sizes(wildcards):
    return config["subsets"][wildcards.subset]


def cached_datasets():
    return expand(rules.cache_dataset.output.info, dataset=DATASETS)


def materialized_subsets():
    return expand(
        rules.materialize_subset.output.manifest, dataset=DATASETS, subset=SUBSETS
    )


def snn_settings(wildcards):
    """The `snn` section with the dataset's overrides applied."""
    return {**config["snn"], **config["snn_overrides"].get(wildcards.dataset, {})}


def forward_check_subset(wildcards):
    """The forward check reads test images of the first configured subset."""
    return rules.materialize_subset.output.tensors.format(
        dataset=wildcards.dataset, subset=SUBSETS[0]
    )


def es_settings(wildcards):
    """The `es` section with the overrides of the grid entry that holds this run."""
    for grid in config["es_grid"]:
        if (
            wildcards.dataset in grid["datasets"]
            and wildcards.encoder in grid["encoders"]
            and wildcards.subset in grid["subsets"]
            and wildcards.mode in grid["modes"]
            and int(wildcards.seed) in grid["seeds"]
        ):
            return {**config["es"], **grid.get("es", {})}
    raise ValueError(f"ES run {dict(wildcards)} is not in config.es_grid")


def cnn_targets():
    return expand(rules.train_cnn.output.metrics, dataset=DATASETS, subset=SUBSETS)


def forward_check_targets():
    return expand(
        rules.snn_forward_check.output.report, dataset=DATASETS, encoder=ENCODERS
    )


def bptt_targets():
    return expand(
        rules.train_snn_bptt.output.metrics,
        dataset=DATASETS,
        encoder=ENCODERS,
        subset=SUBSETS,
    )


def es_targets(modes=ES_MODES, datasets=None, encoders=None, subsets=None):
    """Metrics files of the ES grid, optionally filtered (for the Makefile targets)."""
    targets = []
    for grid in config["es_grid"]:
        targets += expand(
            rules.run_es.output.metrics,
            dataset=[d for d in grid["datasets"] if datasets is None or d in datasets],
            encoder=[e for e in grid["encoders"] if encoders is None or e in encoders],
            subset=[s for s in grid["subsets"] if subsets is None or s in subsets],
            mode=[m for m in grid["modes"] if m in modes],
            seed=grid["seeds"],
        )
    return sorted(set(targets))


def benchmark_channels():
    """Conv channels of each benchmarked dataset's SNN (with its overrides)."""
    return {
        name: {**config["snn"], **config["snn_overrides"].get(name, {})}["channels"]
        for name in config["benchmark"]["datasets"]
    }


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
    section = config.get("diagnostics", {})
    return {key: value for key, value in section.items() if key != "grid"}


def diagnostics_outputs():
    if not diagnostics_enabled():
        return []
    return [str(path) for path in rules.aggregate_diagnostics.output]


def manifest_entries():
    """(file, producing rule) for every published file: tables, plots and per-run results."""
    # str(): the output objects carry report flags that cannot be pickled into the job
    entries = [(str(path), "aggregate") for path in rules.aggregate.output]
    entries += [(path, "train_cnn") for path in cnn_targets()]
    entries += [(path, "train_snn_bptt") for path in bptt_targets()]
    entries += [(path, "snn_forward_check") for path in forward_check_targets()]
    entries += [(path, "run_es") for path in es_targets()]
    entries += [(path, "aggregate_diagnostics") for path in diagnostics_outputs()]
    entries += [(path, "diagnose_es") for path in diagnostics_targets()]
    entries += [(path, "aggregate_ablation") for path in ablation_outputs()]
    entries += [(path, "run_ablation") for path in ablation_targets()]
    return sorted(entries)


def published_files():
    return [path for path, _ in manifest_entries()]


def all_targets():
    return (
        cached_datasets()
        + materialized_subsets()
        + cnn_targets()
        + forward_check_targets()
        + bptt_targets()
        + es_targets()
        + diagnostics_outputs()
        + ablation_outputs()
        + [rules.write_manifest.output.manifest]
    )


# --- ES ablation (workflow/rules/ablation.smk) -------------------------------------------


def ablation_study(wildcards):
    """The config entry of the study ``wildcards.study``."""
    return next(e for e in config.get("ablation", []) if e["study"] == wildcards.study)


def ablation_subset(wildcards):
    study = ablation_study(wildcards)
    return rules.materialize_subset.output.tensors.format(
        dataset=study["dataset"], subset=study["subset"]
    )


def ablation_subset_manifest(wildcards):
    study = ablation_study(wildcards)
    return rules.materialize_subset.output.manifest.format(
        dataset=study["dataset"], subset=study["subset"]
    )


def ablation_changes(wildcards):
    """The variant's changes to `es`, `snn` or the encoder (as written in the config)."""
    return ablation_study(wildcards)["variants"][wildcards.variant] or {}


def ablation_snn(wildcards):
    """`snn` with the dataset's overrides, the study's base and the variant's changes."""
    study = ablation_study(wildcards)
    return {
        **config["snn"],
        **config["snn_overrides"].get(study["dataset"], {}),
        **study.get("base", {}).get("snn", {}),
        **ablation_changes(wildcards).get("snn", {}),
    }


def ablation_es(wildcards):
    """`es` with the study's base and the variant's changes."""
    base = ablation_study(wildcards).get("base", {}).get("es", {})
    return {**config["es"], **base, **ablation_changes(wildcards).get("es", {})}


def ablation_run(wildcards):
    """Study name, dataset, encoder, subset and seed shared by the study's variants."""
    study = ablation_study(wildcards)
    return {k: study[k] for k in ("study", "dataset", "encoder", "subset", "seed")}


def ablation_targets():
    targets = []
    for study in config.get("ablation", []):
        targets += expand(
            rules.run_ablation.output.metrics,
            study=study["study"],
            variant=list(study["variants"]),
        )
    return targets


def ablation_outputs():
    if not config.get("ablation"):
        return []
    return [str(path) for path in rules.aggregate_ablation.output]
