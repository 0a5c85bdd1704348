"""Snakemake job: results/manifest.tsv, the sha256 and size of every published file."""

from snn_es.job import snakemake_job
from snn_es.report import write_manifest

with snakemake_job(snakemake):
    write_manifest(snakemake.params.entries, snakemake.output.manifest)
