# Helpers of the `es` stage (its rules are in es.smk).

from snn_es.config import execution_settings, expand_runs

RUNS = expand_runs(config)
GRID_RUNS = {run: spec for run, spec in RUNS.items() if run.startswith("es/")}
EXECUTION = execution_settings(config)
ES_MODES = ("sequential", "chunked")


def run_spec(wildcards):
    """The run's canonical spec: dataset, encoder, subset, mode, seed, snn, es."""
    return RUNS[wildcards.run]


def run_subset(wildcards):
    spec = RUNS[wildcards.run]
    return {
        "subset": rules.materialize_subset.output.tensors.format(**spec),
        "manifest": rules.materialize_subset.output.manifest.format(**spec),
    }


def es_targets(modes=ES_MODES, datasets=None, encoders=None, subsets=None):
    """Metrics files of the ES grid, optionally filtered (for the Makefile targets)."""
    return sorted(
        rules.run_es.output.metrics.format(run=run)
        for run, spec in GRID_RUNS.items()
        if spec["mode"] in modes
        and (datasets is None or spec["dataset"] in datasets)
        and (encoders is None or spec["encoder"] in encoders)
        and (subsets is None or spec["subset"] in subsets)
    )
