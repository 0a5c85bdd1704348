"""Snakemake job: one ES run (dataset x encoder x subset x mode x seed)."""

import json
from pathlib import Path

from snn_es.es.run import run_es, settings_from_config, write_run_outputs
from snn_es.job import snakemake_job
from snn_es.models import SNNConfig
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    wc = snakemake.wildcards
    subset = load_subset(snakemake.input.subset)
    manifest = json.loads(Path(snakemake.input.manifest).read_text())
    cfg = SNNConfig(input_shape=tuple(subset["train_images"].shape[1:]),
                    num_classes=len(subset["classes"]), **snakemake.params.snn)
    es_settings, run = settings_from_config(snakemake.params.es, wc.mode)
    # The checkpoint is not a declared output, so Snakemake keeps it when a run is killed
    # and the rerun resumes from it.
    checkpoint = Path(snakemake.output.metrics).with_name("checkpoint.pt")
    metrics, rows, theta = run_es(
        subset, cfg, es_settings, run, encoder=wc.encoder, seed=int(wc.seed),
        checkpoint_path=checkpoint, data_id=manifest["file_sha256"],
    )
    resolved = {**dict(snakemake.params.items()), **dict(wc.items())}
    write_run_outputs(metrics, rows, theta, snakemake.output.log_csv, snakemake.output.metrics,
                      snakemake.output.params, resolved)
    checkpoint.unlink(missing_ok=True)
    print({k: v for k, v in metrics.items() if k != "config"})
