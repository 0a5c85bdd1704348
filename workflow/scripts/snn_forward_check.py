"""Snakemake job: one checked forward pass of the snnTorch SNN for a dataset x encoder."""

from snn_es.checks import forward_check
from snn_es.io import atomic_write_json
from snn_es.job import snakemake_job
from snn_es.settings import SNNSettings
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    subset = load_subset(snakemake.input.subset)
    cfg = SNNSettings(input_shape=tuple(subset["test_images"].shape[1:]),
                    num_classes=len(subset["classes"]), **snakemake.params.snn)
    n = snakemake.params.batch_size
    report = forward_check(subset["test_images"][:n], subset["test_labels"][:n], cfg,
                           snakemake.wildcards.encoder, snakemake.params.seed)
    report["dataset"] = snakemake.wildcards.dataset
    atomic_write_json(snakemake.output.report, {**report, "config": dict(snakemake.params.items())})
    print(report)
