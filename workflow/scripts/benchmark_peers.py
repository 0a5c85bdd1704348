"""Snakemake job: evaluations per second of every side-by-side implementation, measured
together in rounds (results/tables/es_peers_speed.csv; snn_es.peers_speed)."""

import torch

from snn_es.config import PEER_PROJECT_MODES
from snn_es.job import snakemake_job
from snn_es.peers import require_evotorch
from snn_es.peers_speed import measure_speeds
from snn_es.report import write_csv
from snn_es.settings import ExecutionSettings, SNNSettings
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    specs, speed = snakemake.params.specs, snakemake.params.speed
    if any(name not in PEER_PROJECT_MODES for name in specs):
        require_evotorch()  # one clear line before any work if the group is not installed
    # One thread, as every run of the study has; the job holds both cores (profile) so that
    # nothing runs beside it while it is timed.
    torch.set_num_threads(1)
    subset = load_subset(snakemake.input.subset)
    spec = next(iter(specs.values()))
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]),
                      num_classes=len(subset["classes"]), **spec["snn"])
    resources = snakemake.resources
    execution = ExecutionSettings(chunk_size=resources.chunk_size,
                                  image_chunk=resources.image_chunk, fused=bool(resources.fused),
                                  checkpoint_every=resources.checkpoint_every)
    frame = measure_speeds(specs, subset, cfg, execution, generations=speed["generations"],
                           rounds=speed["rounds"])
    write_csv(frame, snakemake.output.table)
    print(frame.to_string())
