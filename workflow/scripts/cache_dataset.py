"""Snakemake job: cache one dataset's train and test splits as uint8 tensors."""

from snn_es.data import DatasetSpec, cache_dataset, resolve_mirror
from snn_es.job import snakemake_job

with snakemake_job(snakemake):
    cache_dataset(
        spec=DatasetSpec.from_config(snakemake.wildcards.dataset, snakemake.params.spec),
        mirror=resolve_mirror(snakemake.params.mirror),
        outputs={"train": snakemake.output.train, "test": snakemake.output.test},
        info_path=snakemake.output.info,
    )
