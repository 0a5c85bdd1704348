"""Snakemake job: the compute-scaling table and plot."""

from snn_es.job import snakemake_job
from snn_es.report import write_csv
from snn_es.scaling_report import plot_scaling, reference_lines, scaling_table

with snakemake_job(snakemake):
    table = scaling_table(snakemake.input.runs)
    write_csv(table, snakemake.output.table)
    plot_scaling(table, reference_lines(snakemake.input.references), snakemake.output.plot)
    print(table.to_string())
