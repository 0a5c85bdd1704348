"""Snakemake job: ES population throughput side by side (results/tables/throughput.csv)."""

import json
from pathlib import Path

from snn_es.benchmark import run_benchmark
from snn_es.job import snakemake_job
from snn_es.report import write_csv
from snn_es.settings import SNNSettings
from snn_es.subsets import load_subset

with snakemake_job(snakemake):
    s = snakemake.params.settings
    networks = {}
    for path in snakemake.input.info:  # results/data/{dataset}/info.json
        info = json.loads(Path(path).read_text())
        networks[info["dataset"]] = SNNSettings(
            **{**snakemake.params.networks[info["dataset"]], "num_steps": s["steps"]},
            input_shape=tuple(info["image_shape"]), num_classes=len(info["classes"]))
    train = {}  # ES generation 0's minibatch of each dataset's subset (benchmark.subset)
    for path in snakemake.input.subsets:  # results/subsets/{dataset}/{subset}.pt
        subset = load_subset(path)
        train[Path(path).parent.name] = (subset["train_images"], subset["train_labels"])
    frame = run_benchmark(
        networks, encoders=s["encoders"], population=s["population"], batch=s["batch"],
        chunk_sizes=s["chunks"], repeats=s["repeats"], memory_chunks=s["memory_chunks"],
        low_rank=s["low_rank"], scaling_populations=tuple(s["scaling_populations"]),
        scaling_batch=s["scaling_batch"], scaling_chunk=s["scaling_chunk"],
        scaling_encoders=tuple(s["scaling_encoders"]), image_chunks=tuple(s["image_chunks"]),
        train=train, images_label=f"subset {s['subset']}",
        rounds=s["rounds"],
    )
    write_csv(frame, snakemake.output.throughput)
    print(frame.to_string())
