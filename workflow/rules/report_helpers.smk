# Helpers of the `report` stage (its rules are in report.smk).


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


def benchmark_networks():
    """Each enabled dataset's SNN settings (`snn` + overrides); shapes come from its info."""
    return {name: snn_settings(config, name) for name in DATASETS}
