"""Snakemake job: the SNN trained by surrogate-gradient BPTT (the reference for ES)."""

from snn_es.job import snakemake_job
from snn_es.settings import SNNSettings
from snn_es.subsets import load_subset
from snn_es.train import TrainSettings, train_snn_bptt, write_training_outputs

with snakemake_job(snakemake):
    subset = load_subset(snakemake.input.subset)
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]),
                    num_classes=len(subset["classes"]), **snakemake.params.snn)
    metrics, rows = train_snn_bptt(
        subset["train_images"], subset["train_labels"],
        subset["test_images"], subset["test_labels"],
        cfg, TrainSettings(**snakemake.params.train),
        seed=snakemake.params.seed, encoder=snakemake.wildcards.encoder,
    )
    write_training_outputs(metrics, rows, snakemake.output.metrics, snakemake.output.epochs,
                           resolved=dict(snakemake.params.items()))
    print(metrics)
