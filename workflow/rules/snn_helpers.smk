# Helpers of the `snn` stage (its rules are in snn.smk).


def dataset_snn(wildcards):
    """The canonical `snn` of the dataset (the section with the dataset's overrides)."""
    return snn_settings(config, wildcards.dataset)


def forward_check_subset(wildcards):
    """The forward check reads test images of the subset with the fewest (ties: by name),
    whatever order the config lists the subsets in."""
    sizes = section("subsets")
    smallest = min(sizes, key=lambda name: (sizes[name]["test"], name))
    return rules.materialize_subset.output.tensors.format(
        dataset=wildcards.dataset, subset=smallest
    )


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
