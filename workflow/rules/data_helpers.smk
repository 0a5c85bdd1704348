# Helpers of the `data` stage (its rules are in data.smk).

import os
import sys

from snn_es.data import cache_info_path, recorded_sha256
from snn_es.io import file_problem
from snn_es.subsets import subset_manifest_path


def dataset_entry(wildcards):
    """The dataset's catalogue entry, without `split_sizes` (used for checks only)."""
    entry = config["datasets"][wildcards.dataset]
    return canonical_json({k: v for k, v in entry.items() if k != "split_sizes"})


def subset_sizes(wildcards):
    return section("subsets")[wildcards.subset]


def cached_datasets():
    return expand(rules.cache_dataset.output.info, dataset=DATASETS)


def data_files():
    """Every cached split and subset tensor file: targets of `all`, so one that was deleted
    (or set aside as damaged) is rebuilt even when nothing downstream is out of date."""
    caches = [rules.cache_dataset.output.train, rules.cache_dataset.output.test]
    return expand(caches, dataset=DATASETS) + expand(
        rules.materialize_subset.output.tensors, dataset=DATASETS, subset=SUBSETS
    )


def materialized_subsets():
    return expand(
        rules.materialize_subset.output.manifest, dataset=DATASETS, subset=SUBSETS
    )


def damaged_data_files():
    """Cached splits and subsets on disk whose bytes no longer match their recorded sha256.

    Snakemake sees only mtimes, so a truncated or garbled file would otherwise count as
    up to date (or, newer than its consumers, rerun them on bad data)."""
    damaged = []
    for path in data_files():
        record = (
            subset_manifest_path(path)
            if path.startswith("results/subsets/")
            else cache_info_path(path)
        )
        if not (os.path.exists(path) and os.path.exists(record)):
            continue  # missing: Snakemake plans its rule anyway
        problem = file_problem(path, recorded_sha256(path, record))
        if problem:
            damaged.append((path, problem))
    return damaged


def set_aside_damaged_data():
    """Move every damaged data file aside to `*.corrupt`, announced in one line each, so
    that Snakemake sees it missing and rebuilds it; the jobs that read it rerun too."""
    if not workflow.is_main_process:
        return  # a cluster job re-reads the Snakefile; the main process already decided
    for path, problem in damaged_data_files():
        aside = f"{path}.corrupt"
        os.replace(path, aside)
        producer = (
            "materialize_subset"
            if path.startswith("results/subsets/")
            else "cache_dataset"
        )
        print(
            f"snn-es: {path} {problem}; moved it to {aside}, and rule {producer} rebuilds it",
            file=sys.stderr,
        )
