# Helpers of the `data` stage (its rules are in data.smk).


def dataset_entry(wildcards):
    """The dataset's catalogue entry, without `split_sizes` (used for checks only)."""
    entry = config["datasets"][wildcards.dataset]
    return canonical_json({k: v for k, v in entry.items() if k != "split_sizes"})


def subset_sizes(wildcards):
    return section("subsets")[wildcards.subset]


def cached_datasets():
    return expand(rules.cache_dataset.output.info, dataset=DATASETS)


def materialized_subsets():
    return expand(
        rules.materialize_subset.output.manifest, dataset=DATASETS, subset=SUBSETS
    )
