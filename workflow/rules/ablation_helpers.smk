# Helpers of the `ablation` stage (its rules are in ablation.smk).

from snn_es.config import study_labels

STUDY_RUNS = {run: spec for run, spec in RUNS.items() if run.startswith("ablation/")}


def ablation_targets():
    return [rules.run_ablation.output.metrics.format(run=run) for run in STUDY_RUNS]


def ablation_labels():
    """metrics file -> {study, variant, changes}: what the ablation table says of a run."""
    return canonical_json(
        {
            rules.run_ablation.output.metrics.format(run=run): label
            for run, label in study_labels(config).items()
        }
    )


def ablation_outputs():
    if not STUDY_RUNS:
        return []
    return [str(path) for path in rules.aggregate_ablation.output]
