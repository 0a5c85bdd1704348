# Helpers of the `scaling` stage (its rules are in scaling.smk).

from snn_es.config import scaling_runs

SCALING_RUNS = scaling_runs(config)


def scaling_targets():
    return [rules.run_scaling.output.metrics.format(run=run) for run in SCALING_RUNS]


def scaling_references():
    """The CNN and BPTT metrics the plot draws as reference lines, one per curve's cell."""
    if not SCALING_RUNS:
        return []
    section = config["scaling"]
    subset = section["subset"]
    paths = set()
    for cell in section["cells"]:
        paths.add(
            rules.train_cnn.output.metrics.format(
                dataset=cell["dataset"], subset=subset
            )
        )
        paths.add(
            rules.train_snn_bptt.output.metrics.format(
                dataset=cell["dataset"], encoder=cell["encoder"], subset=subset
            )
        )
    return sorted(paths)


def scaling_outputs():
    if not SCALING_RUNS:
        return []
    return [str(path) for path in rules.aggregate_scaling.output]
