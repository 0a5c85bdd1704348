"""Snakemake job: ES population throughput side by side (results/tables/throughput.csv)."""

from snn_es.benchmark import run_benchmark
from snn_es.job import snakemake_job
from snn_es.report import write_csv

with snakemake_job(snakemake):
    s = snakemake.params.settings
    frame = run_benchmark(
        datasets={d: tuple(c) for d, c in snakemake.params.channels.items()},
        encoders=s["encoders"], steps=s["steps"], population=s["population"],
        batch=s["batch"], chunk_sizes=s["chunks"], repeats=s["repeats"],
        memory_chunks=s["memory_chunks"], low_rank=s.get("low_rank", 1),
    )
    write_csv(frame, snakemake.output.throughput)
    print(frame.to_string())
