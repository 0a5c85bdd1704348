"""Snakemake job: one run of the side-by-side (config section `peers`): the project's ES
(`snn_es`, run_es with the grid's flip_delta evaluator; `snn_es_chunked`, with the chunked
one) or EvoTorch's SNES / PGPE (snn_es.peers), from its spec."""

import json
from pathlib import Path

from snn_es.config import PEER_PROJECT_MODES
from snn_es.es import run as es_run
from snn_es.io import atomic_write_json, atomic_write_text
from snn_es.job import snakemake_job
from snn_es.peers import require_evotorch, rows_to_csv, run_peer
from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    spec, resources = snakemake.params.spec, snakemake.resources
    implementation = spec["implementation"]
    project = implementation in PEER_PROJECT_MODES  # the project's own ES (run_es)
    if not project:
        require_evotorch()  # one clear line before any work if the group is not installed
    subset = load_subset(snakemake.input.subset)
    manifest = json.loads(Path(snakemake.input.manifest).read_text())
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]),
                      num_classes=len(subset["classes"]), **spec["snn"])
    # Speed only (config section `execution`), passed as resources so it reruns nothing.
    execution = ExecutionSettings(chunk_size=resources.chunk_size,
                                  image_chunk=resources.image_chunk, fused=bool(resources.fused),
                                  checkpoint_every=resources.checkpoint_every)
    es = ESSettings(**spec["es"])
    if project:
        checkpoint = Path(snakemake.output.metrics).with_name("checkpoint.pt")
        metrics, rows, _ = es_run.run_es(
            subset, cfg, es, encoder=spec["encoder"], seed=spec["seed"], mode=spec["mode"],
            checkpoint_path=checkpoint, execution=execution, data_id=manifest["file_sha256"])
        log_csv = es_run.rows_to_csv(rows)
    else:
        checkpoint = None
        metrics, rows, _ = run_peer(subset, cfg, es, spec["encoder"], spec["seed"],
                                    implementation, spec["evotorch"], execution)
        log_csv = rows_to_csv(rows)
    atomic_write_text(snakemake.output.log_csv, log_csv)
    atomic_write_json(snakemake.output.metrics,
                      {**metrics, "implementation": implementation, "config": spec})
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    print({k: v for k, v in metrics.items() if k != "config"})
