"""Snakemake job: the readout-fit reference of one ES run (its frozen initial network)."""

from snn_es.io import atomic_write_json
from snn_es.job import snakemake_job
from snn_es.readout_fit import readout_fit_reference
from snn_es.settings import ESSettings, ReadoutFitSettings, SNNSettings
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    spec = snakemake.params.spec
    subset = load_subset(snakemake.input.subset)
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]),
                      num_classes=len(subset["classes"]), **spec["snn"])
    fit = ReadoutFitSettings(**snakemake.params.fit)
    metrics, rows = readout_fit_reference(subset, cfg, ESSettings(**spec["es"]),
                                          spec["encoder"], spec["seed"], fit)
    atomic_write_json(snakemake.output.metrics,
                      {**metrics, "epochs": rows, "config": {"run": spec,
                                                             "readout_fit": snakemake.params.fit}})
    print(metrics)
