"""Snakemake job: the ES ablation table and plot."""

from snn_es.job import snakemake_job
from snn_es.report import ablation_table, plot_ablation, write_csv

with snakemake_job(snakemake):
    table = ablation_table(snakemake.params.labels)
    write_csv(table, snakemake.output.table)
    plot_ablation(table, snakemake.output.plot)
    print(table.to_string())
