# Helpers of the `report` stage (its rules are in report.smk).

import os

from snn_es.io import sha256_file


def manifest_entries():
    """(file, producing rule) for every published file: tables, plots and per-run results
    of `all`, plus those of the studies that have been built (they are not part of `all`).
    """
    # str(): the output objects carry report flags that cannot be pickled into the job
    entries = [(str(path), "aggregate") for path in rules.aggregate.output]
    entries += [(path, "train_cnn") for path in cnn_targets()]
    entries += [(path, "train_snn_bptt") for path in bptt_targets()]
    entries += [(path, "snn_forward_check") for path in forward_check_targets()]
    entries += [(path, "run_es") for path in es_targets()]
    return sorted(entries + built_study_files())


def study_files():
    """(file, producing rule) of every study output: named targets outside `all`."""
    entries = [(path, "aggregate_diagnostics") for path in diagnostics_outputs()]
    entries += [(path, "diagnose_es") for path in diagnostics_targets()]
    entries += [(path, "aggregate_ablation") for path in ablation_outputs()]
    entries += [(path, "run_ablation") for path in ablation_targets()]
    entries += [(path, "aggregate_scaling") for path in scaling_outputs()]
    entries += [(path, "run_scaling") for path in scaling_targets()]
    entries += [(path, "aggregate_peers") for path in peer_outputs()]
    entries += [(path, "run_peer") for path in peer_targets()]
    entries += [(path, "benchmark_peers") for path in peer_speed_outputs()]
    return entries


def built_study_files():
    """The study files that exist. They are not inputs of the manifest (that would pull the
    studies into `all`); their checksums are its params, so a rebuilt study reruns it.
    """
    return [(path, rule) for path, rule in study_files() if os.path.exists(path)]


def study_checksums():
    # sorted: the params compare by repr, and the order of the config's keys must not count
    return {path: sha256_file(path) for path, _ in sorted(built_study_files())}


def published_files():
    """The manifest's inputs: what `all` builds (the studies' files are params)."""
    study = {path for path, _ in study_files()}
    return [path for path, _ in manifest_entries() if path not in study]


def all_targets():
    return (
        cached_datasets()
        + materialized_subsets()
        + cnn_targets()
        + forward_check_targets()
        + bptt_targets()
        + es_targets()
        + [rules.write_manifest.output.manifest]
    )


def study_targets():
    """Every study's tables and plots (target `studies`)."""
    return (
        diagnostics_outputs()
        + ablation_outputs()
        + scaling_outputs()
        + peer_outputs()
        + peer_speed_outputs()
    )


def benchmark_subsets():
    """The subset whose training images the benchmark times, per enabled dataset (in the
    order of cached_datasets()); none where `benchmark.subset` is null (uniform noise)."""
    subset = config["benchmark"].get("subset")
    if subset is None:
        return []
    return [rules.materialize_subset.output.tensors.format(dataset=name, subset=subset)
            for name in DATASETS]


def benchmark_networks():
    """Each enabled dataset's SNN settings (`snn` + overrides); shapes come from its info."""
    return {name: snn_settings(config, name) for name in DATASETS}
