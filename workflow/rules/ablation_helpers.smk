# Helpers of the `ablation` stage (its rules are in ablation.smk).

from snn_es.config import same_spec_run, study_labels

STUDY_RUNS = {run: spec for run, spec in RUNS.items() if run.startswith("ablation/")}


def study_metrics(run):
    """The metrics of one study run: a grid run's or scaling point's where the specs are
    exactly the same (the study's base at the side-by-side's budget), else its own
    run_ablation job."""
    same = same_spec_run(STUDY_RUNS[run], REUSABLE_RUNS)
    if same is not None:
        return rules.run_es.output.metrics.format(run=same)
    return rules.run_ablation.output.metrics.format(run=run)


def ablation_targets():
    return list(dict.fromkeys(study_metrics(run) for run in STUDY_RUNS))


def ablation_labels():
    """What the ablation table says of each study run, in the config's order: its metrics
    file, study, variant, changes and seed."""
    labels = study_labels(config)
    return canonical_json(
        [{"metrics": study_metrics(run), **labels[run]} for run in STUDY_RUNS]
    )


def ablation_outputs():
    if not STUDY_RUNS:
        return []
    return [str(path) for path in rules.aggregate_ablation.output]
