"""Snakemake job: per-job ES diagnostics -> results/tables/es_diagnostics.csv and its plot."""

from snn_es.diagnostics_report import diagnostics_table, plot_diagnostics
from snn_es.job import snakemake_job
from snn_es.report import write_csv

with snakemake_job(snakemake):
    table = diagnostics_table(snakemake.input.tables)
    write_csv(table, snakemake.output.table)
    plot_diagnostics(table, snakemake.output.plot)
    print(table.to_string())
