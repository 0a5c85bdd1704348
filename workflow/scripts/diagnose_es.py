"""Snakemake job: ES gradient diagnostics for one dataset x encoder at the ES initial weights."""

from snn_es.es.diagnostics import DiagnosticSettings, diagnose, rows_to_csv
from snn_es.io import atomic_write_text
from snn_es.job import snakemake_job
from snn_es.settings import ESSettings, SNNSettings
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    wc, params = snakemake.wildcards, snakemake.params
    subset = load_subset(snakemake.input.subset)
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]),
                      num_classes=len(subset["classes"]), **params.snn)
    settings = DiagnosticSettings.from_config(params.diagnostics)
    rows = diagnose(subset, cfg, wc.encoder, params.diagnostics["seed"], settings,
                    ESSettings(**params.es))
    for row in rows:
        row.update(dataset=wc.dataset, subset=params.diagnostics["subset"])
    atomic_write_text(snakemake.output.table, rows_to_csv(rows))
