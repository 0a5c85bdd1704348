# Helpers of the `report` stage (its rules are in report.smk).

import os

from snn_es.io import sha256_file


def study_groups():
    """Each study's files with the rule that writes each, one group per study, tables and
    plots first, then the per-run results. The studies are named targets outside `all`.
    """
    groups = {
        "diagnostics": [
            (path, "aggregate_diagnostics") for path in diagnostics_outputs()
        ]
        + [(path, "diagnose_es") for path in diagnostics_targets()],
        "ablation": [(path, "aggregate_ablation") for path in ablation_outputs()]
        + [(path, "run_ablation") for path in ablation_targets()],
        "scaling": [(path, "aggregate_scaling") for path in scaling_outputs()]
        + [(path, "run_scaling") for path in scaling_targets()],
        "peers": [(path, "aggregate_peers") for path in peer_outputs()]
        + [(path, "run_peer") for path in peer_targets()]
        + [(path, "benchmark_peers") for path in peer_speed_outputs()],
    }
    return {name: entries for name, entries in groups.items() if entries}


def study_files():
    """(file, producing rule) of every study output."""
    return [entry for entries in study_groups().values() for entry in entries]


def requested_study_files():
    """The study files this invocation builds: every file of a study whose table, plot or
    named target was asked for on the command line (`studies`, `scaling`, a table ...).
    """
    requested = set()
    for target in workflow.dag_settings.targets:
        if workflow.is_rule(target):  # a named target: the files it asks for
            requested.update(str(path) for path in workflow.get_rule(target).input)
        else:
            requested.add(target)
    return [
        entry
        for entries in study_groups().values()
        if requested & {path for path, _ in entries}
        for entry in entries
    ]


def built_study_files():
    """The study files the manifest lists but does not take as inputs (that would pull the
    studies into `all`): those that exist and are not being built now. Their checksums are
    its params, so a study rebuilt later reruns it."""
    building = set(requested_study_files())
    return [
        (path, rule)
        for path, rule in study_files()
        if (path, rule) not in building and os.path.exists(path)
    ]


def study_checksums(wildcards=None):
    # sorted: the params compare by repr, and the order of the config's keys must not count
    return {path: sha256_file(path) for path, _ in sorted(built_study_files())}


def manifest_entries(wildcards=None):
    """(file, producing rule) for every published file: tables, plots and per-run results
    of `all`, those of the studies built now, and those of studies built before."""
    return sorted(all_published() + requested_study_files() + built_study_files())


def all_published():
    """(file, producing rule) of what `all` publishes: its tables, plots and run results."""
    # str(): the output objects carry report flags that cannot be pickled into the job
    entries = [(str(path), "aggregate") for path in rules.aggregate.output]
    entries += [(path, "train_cnn") for path in cnn_targets()]
    entries += [(path, "train_snn_bptt") for path in bptt_targets()]
    entries += [(path, "snn_forward_check") for path in forward_check_targets()]
    entries += [(path, "run_es") for path in es_targets()]
    entries += [(path, "fit_readout") for path in readout_fit_targets()]
    return entries


def published_files(wildcards=None):
    """The manifest's inputs: what `all` builds and the study files built in this run, so
    the manifest is written after them (and lists only files that exist)."""
    return [path for path, _ in sorted(all_published() + requested_study_files())]


def all_targets():
    """Everything `all` publishes is its own input, so a deleted table or plot is rebuilt
    (Snakemake does not rebuild a missing file that only an up-to-date job reads)."""
    return (
        cached_datasets()
        + materialized_subsets()
        + data_files()
        + [path for path, _ in all_published()]
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
    order of cached_datasets()); none where `benchmark.subset` is null (uniform noise).
    """
    subset = config["benchmark"].get("subset")
    if subset is None:
        return []
    return [
        rules.materialize_subset.output.tensors.format(dataset=name, subset=subset)
        for name in DATASETS
    ]


def benchmark_networks():
    """Each enabled dataset's SNN settings (`snn` + overrides); shapes come from its info."""
    return {name: snn_settings(config, name) for name in DATASETS}
