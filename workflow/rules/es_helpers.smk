# Helpers of the `es` stage (its rules are in es.smk).

from snn_es.config import (
    execution_settings,
    expand_runs,
    readout_fit_settings,
    reusable_runs,
)
from snn_es.settings import EVALUATORS

RUNS = expand_runs(config)
GRID_RUNS = {run: spec for run, spec in RUNS.items() if run.startswith("es/")}
REUSABLE_RUNS = reusable_runs(RUNS)  # what a study's base or a `peers` row may read
EXECUTION = execution_settings(config)
ES_MODES = EVALUATORS


def run_spec(wildcards):
    """The run's canonical spec: dataset, encoder, subset, mode, seed, snn, es."""
    return RUNS[wildcards.run]


def run_priority(wildcards):
    """Longest runs first, so the short jobs fill in at the end instead of one long run
    trailing alone; every ES run (>= 1) before the baselines (0), which are short. The
    estimate: images forwarded per run x (1 + conv1 passes per image: T for spike inputs),
    in units of 20k; only the order matters."""
    spec = RUNS[wildcards.run]
    es = spec["es"]
    per_generation = (
        es["population"] * es["batch_size"]
        + es["readout_steps"] * es["readout_batch_size"]
    )
    conv1_passes = 1 if spec["encoder"] == "repeat" else spec["snn"]["num_steps"]
    return 1 + es["generations"] * per_generation * (1 + conv1_passes) // 20_000


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


def readout_fit_targets():
    """The readout-fit reference of every ES grid run, beside the run's own files."""
    return sorted(rules.fit_readout.output.metrics.format(run=run) for run in GRID_RUNS)
