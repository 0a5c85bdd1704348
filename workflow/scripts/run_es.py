"""Snakemake job: one ES run, from its canonical spec (grid cells and study variants alike)."""

import json
from pathlib import Path

from snn_es.es.run import run_es, write_run_outputs
from snn_es.job import snakemake_job
from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    spec, resources = snakemake.params.spec, snakemake.resources
    subset = load_subset(snakemake.input.subset)
    manifest = json.loads(Path(snakemake.input.manifest).read_text())
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]),
                      num_classes=len(subset["classes"]), **spec["snn"])
    # Speed only (config section `execution`), passed as resources so it reruns nothing.
    execution = ExecutionSettings(chunk_size=resources.chunk_size,
                                  image_chunk=resources.image_chunk, fused=bool(resources.fused),
                                  checkpoint_every=resources.checkpoint_every)
    # The checkpoint is not a declared output, so Snakemake keeps it when a run is killed
    # and the rerun resumes from it.
    checkpoint = Path(snakemake.output.metrics).with_name("checkpoint.pt")
    metrics, rows, theta = run_es(
        subset, cfg, ESSettings(**spec["es"]), encoder=spec["encoder"], seed=spec["seed"],
        mode=spec["mode"], checkpoint_path=checkpoint, execution=execution,
        data_id=manifest["file_sha256"],
    )
    write_run_outputs(metrics, rows, theta, snakemake.output.log_csv, snakemake.output.metrics,
                      snakemake.output.params, spec)
    checkpoint.unlink(missing_ok=True)
    print({k: v for k, v in metrics.items() if k != "config"})
