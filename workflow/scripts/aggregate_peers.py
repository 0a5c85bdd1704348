"""Snakemake job: the table and plot of the side-by-side with EvoTorch (`peers`)."""

from snn_es.job import snakemake_job
from snn_es.peers_report import peers_table, plot_peers
from snn_es.report import write_csv

with snakemake_job(snakemake):
    table = peers_table(snakemake.input.runs)
    write_csv(table, snakemake.output.table)
    plot_peers(snakemake.input.runs, snakemake.output.plot)
    print(table.to_string())
