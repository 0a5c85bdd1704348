"""Snakemake job: one ES ablation variant (the default ES run with some settings changed)."""

import json
from pathlib import Path

from snn_es.es.run import run_es, settings_from_config, write_run_outputs
from snn_es.job import snakemake_job
from snn_es.models import SNNConfig
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    run = snakemake.params.run
    subset = load_subset(snakemake.input.subset)
    manifest = json.loads(Path(snakemake.input.manifest).read_text())
    cfg = SNNConfig(input_shape=tuple(subset["train_images"].shape[1:]),
                    num_classes=len(subset["classes"]), **snakemake.params.snn)
    es = dict(snakemake.params.es)
    encoder = snakemake.params.changes.get("encoder", run["encoder"])
    es_settings, run_settings = settings_from_config(es, "chunked")
    checkpoint = Path(snakemake.output.metrics).with_name("checkpoint.pt")
    metrics, rows, theta = run_es(
        subset, cfg, es_settings, run_settings, encoder=encoder, seed=int(run["seed"]),
        checkpoint_path=checkpoint, data_id=manifest["file_sha256"],
    )
    resolved = {**dict(snakemake.params.items()), "study": run["study"],
                "variant": snakemake.wildcards.variant, "encoder": encoder}
    write_run_outputs(metrics, rows, theta, snakemake.output.log_csv, snakemake.output.metrics,
                      snakemake.output.params, resolved)
    checkpoint.unlink(missing_ok=True)
    print({k: v for k, v in metrics.items() if k != "config"})
