"""Snakemake job: draw one fixed stratified subset of one dataset."""

from snn_es.job import snakemake_job
from snn_es.subsets import materialize_subset

with snakemake_job(snakemake):
    manifest = materialize_subset(
        dataset=snakemake.wildcards.dataset,
        subset=snakemake.wildcards.subset,
        sizes=snakemake.params.sizes,
        seed=snakemake.params.seed,
        cache_paths={"train": snakemake.input.train, "test": snakemake.input.test},
        tensor_path=snakemake.output.tensors,
        manifest_path=snakemake.output.manifest,
    )
    print({split: s["class_counts"] for split, s in manifest["splits"].items()})
