"""Snakemake job: the baseline CNN trained by backprop on one subset."""

from snn_es.job import snakemake_job
from snn_es.subsets import load_subset
from snn_es.train import TrainSettings, train_cnn, write_training_outputs

with snakemake_job(snakemake):
    subset = load_subset(snakemake.input.subset)
    metrics, rows = train_cnn(
        subset["train_images"], subset["train_labels"],
        subset["test_images"], subset["test_labels"],
        TrainSettings(**snakemake.params.train),
        seed=snakemake.params.seed,
        num_classes=len(subset["classes"]),
    )
    write_training_outputs(metrics, rows, snakemake.output.metrics, snakemake.output.epochs,
                           resolved=dict(snakemake.params.items()))
    print(metrics)
