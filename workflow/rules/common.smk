# Helpers shared by the rules: config checking, wildcard values, target lists.
# Rules call these by name (no lambdas inside rules).

from pathlib import Path

from snn_es.config import ConfigError, check_config

try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as error:
    raise WorkflowError(str(error)) from None

DATASETS = config["enabled_datasets"]
SUBSETS = list(config["subsets"])

# The library modules a rule imports are part of its inputs, so editing one reruns exactly
# the stages that use it (Snakemake compares small files by checksum, not only by mtime).
LIBRARY = Path(workflow.basedir) / "src" / "snn_es"
SHARED_MODULES = ("__init__", "io", "seeding", "job", "config")


wildcard_constraints:
    dataset="|".join(DATASETS),
    subset="|".join(SUBSETS),


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


def all_targets():
    return cached_datasets() + materialized_subsets()
