# Tables, plots and the manifest of every published file; the throughput benchmark.


include: "report_helpers.smk"


rule aggregate:
    input:
        es=es_targets(),
        readout_fit=readout_fit_targets(),
        cnn=cnn_targets(),
        bptt=bptt_targets(),
        checks=forward_check_targets(),
        code=script_code("aggregate.py"),
    output:
        es_runs=report(
            "results/tables/es_runs.csv",
            caption="../report/es_runs.rst",
            category="Tables",
        ),
        es_summary=report(
            "results/tables/es_summary.csv",
            caption="../report/es_summary.rst",
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
        # functions: evaluated once every rule (the study targets too) is known
        published_files,
        code=script_code("write_manifest.py"),
    output:
        manifest="results/manifest.tsv",
    log:
        "logs/write_manifest.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        entries=manifest_entries,
        studies=study_checksums,  # studies built before: a rebuilt one reruns the manifest
    script:
        "../scripts/write_manifest.py"


rule studies:
    input:
        study_targets(),


rule benchmark:
    input:
        info=cached_datasets(),
        subsets=benchmark_subsets(),
        code=script_code("benchmark.py"),
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
