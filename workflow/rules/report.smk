# Tables, plots and the manifest of every published file; the throughput benchmark.


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


rule aggregate:
    input:
        es=es_targets(),
        cnn=cnn_targets(),
        bptt=bptt_targets(),
        checks=forward_check_targets(),
        code=library("report"),
    output:
        es_runs=report(
            "results/tables/es_runs.csv",
            caption="../report/es_runs.rst",
            category="Tables",
        ),
        es_timing=report(
            "results/tables/es_timing.csv",
            caption="../report/es_timing.rst",
            category="Tables",
        ),
        baselines=report(
            "results/tables/baselines.csv",
            caption="../report/baselines.rst",
            category="Tables",
        ),
        snn_checks=report(
            "results/tables/snn_checks.csv",
            caption="../report/snn_checks.rst",
            category="Tables",
        ),
        learning_curves=report(
            "results/plots/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Plots",
        ),
        repeat_control=report(
            "results/plots/repeat_control.png",
            caption="../report/repeat_control.rst",
            category="Plots",
        ),
        mode_timing=report(
            "results/plots/mode_timing.png",
            caption="../report/mode_timing.rst",
            category="Plots",
        ),
        accuracy=report(
            "results/plots/accuracy_comparison.png",
            caption="../report/accuracy_comparison.rst",
            category="Plots",
        ),
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/snn-es.yaml"
    script:
        "../scripts/aggregate.py"


rule write_manifest:
    input:
        published_files(),
        code=library("report"),
    output:
        manifest="results/manifest.tsv",
    log:
        "logs/write_manifest.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        entries=manifest_entries(),
    script:
        "../scripts/write_manifest.py"


rule benchmark:
    input:
        info=cached_datasets(),
        code=library(
            "settings",
            "lif",
            "encoders",
            "models",
            "es/__init__",
            "es/params",
            "es/strategy",
            "es/evaluate",
            "es/population",
            "benchmark",
            "report",
        ),
    output:
        throughput=report(
            "results/tables/throughput.csv",
            caption="../report/throughput.rst",
            category="Performance",
        ),
    log:
        "logs/benchmark.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        settings=section("benchmark"),
        networks=benchmark_networks(),
    script:
        "../scripts/benchmark.py"
