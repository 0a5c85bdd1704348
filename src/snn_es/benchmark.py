"""Throughput of one ES generation (P members x B images x T steps), side by side.

Rows (member-sample evaluations per second; one evaluation = one image through T steps):
- ``snntorch_loop``: the snnTorch module network, weights loaded member by member;
- ``sequential`` / ``chunked``: the project's evaluators with its fast forward (compiled
  pool + LIF kernels, channels-last convs), chunked at its best chunk size;
- ``chunked_eager``: the chunked evaluator without compiled kernels or channels-last (what
  those levers are worth);
- ``chunked_lowrank``: the chunked evaluator with rank-r (EGGROLL-style) noise, where the
  first layer's ``W x`` is shared by the chunk;
- ``inference_limit``: plain no-grad inference of one network with the fastest forward, at
  the batch size where it is fastest. A full-rank ES generation cannot beat this by much.
``flops_share``: the network's nominal FLOPs (every conv and linear layer at every step) per
second, as a share of a large float32 matmul's FLOP/s measured in the same run.

Run it with ``make benchmark`` (rule ``benchmark``, settings in the config's ``benchmark``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, Callable

import pandas as pd
import torch

from snn_es.encoders import encode
from snn_es.es.evaluate import PopulationTask, evaluate_population
from snn_es.es.params import ParamLayout
from snn_es.es.strategy import OpenAIES
from snn_es.models import make_snn, snn_functional_forward
from snn_es.seeding import generator_from
from snn_es.settings import ESSettings, SNNSettings


def network_flops(cfg: SNNSettings) -> float:
    """Nominal FLOPs of one image through T steps (2 per multiply-add, convs and linear)."""
    channels_in, height, width = cfg.input_shape
    flops = 0.0
    for channels_out in cfg.channels:
        flops += 2 * channels_out * channels_in * cfg.kernel_size**2 * height * width
        channels_in, height, width = channels_out, height // 2, width // 2
    flops += 2 * cfg.num_classes * cfg.num_features
    return flops * cfg.num_steps


def _time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (torch.compile, allocator)
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def matmul_flops_per_s(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / _time(lambda: a @ b, repeats)


def _setup(cfg: SNNSettings, population: int, batch: int, rank: int = 0):
    model = make_snn(cfg, 0)
    layout = ParamLayout.of(model)
    strategy = OpenAIES(layout.flatten(dict(model.named_parameters())),
                        ESSettings(population=population, rank=rank, generations=1), seed=0,
                        shapes=layout.shapes)
    gen = generator_from(0, "benchmark-images")
    images = torch.rand(batch, *cfg.input_shape, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    return cfg, model, layout, strategy, images, labels


def measure(dataset: str, cfg: SNNSettings, encoder: str, population: int, batch: int,
            chunk_sizes: list[int], repeats: int, low_rank: int = 1) -> list[dict[str, Any]]:
    cfg, model, layout, strategy, images, labels = _setup(cfg, population, batch)
    low_rank_strategy = _setup(cfg, population, batch, low_rank)[3]
    steps = cfg.num_steps
    task = PopulationTask(cfg, layout, encoder, seed=0, fused=True)
    eager = PopulationTask(cfg, layout, encoder, seed=0, fused=False)
    evals = population * batch
    rows = []

    @torch.no_grad()
    def snntorch_loop():
        x_seq = encode(encoder, images, steps, generator_from(0, "spikes"))
        for member in range(population):
            torch.nn.utils.vector_to_parameters(strategy.member(0, member), model.parameters())
            model(x_seq)

    def best_chunk(es: OpenAIES, on: PopulationTask) -> tuple[int, float]:
        timed = [(c, _time(lambda c=c: evaluate_population(
            "chunked", es, 0, images, labels, on, c), repeats)) for c in chunk_sizes]
        return min(timed, key=lambda item: item[1])

    rows.append(("snntorch_loop", None, _time(snntorch_loop, repeats)))
    rows.append(("sequential", None, _time(
        lambda: evaluate_population("sequential", strategy, 0, images, labels, task),
        repeats)))
    rows.append(("chunked", *best_chunk(strategy, task)))
    rows.append(("chunked_eager", *best_chunk(strategy, eager)))
    rows.append((f"chunked_lowrank_r{low_rank}", *best_chunk(low_rank_strategy, task)))

    # Inference limit: one network, P*B images in batches of the fastest size.
    params = dict(model.named_parameters())
    pool = images.repeat((evals + batch - 1) // batch, 1, 1, 1)[:evals]

    @torch.no_grad()
    def inference(size: int) -> None:
        for start in range(0, evals, size):
            chunk = pool[start:start + size]
            x = chunk if task.static_input else task.inputs(chunk, 0, None)
            snn_functional_forward(params, x, cfg, static_input=task.static_input, fused=True)

    limits = [(size, _time(lambda size=size: inference(size), repeats))
              for size in sorted({batch // 2, batch, 2 * batch, 4 * batch})]
    best_size, limit_time = min(limits, key=lambda item: item[1])
    rows.append(("inference_limit", best_size, limit_time))

    out = []
    for name, setting, seconds in rows:
        out.append({"implementation": name, "dataset": dataset, "encoder": encoder,
                    "P": population, "B": batch, "T": steps, "setting": setting,
                    "seconds_per_generation": seconds, "evals_per_s": evals / seconds,
                    "gflops_per_s": network_flops(cfg) * evals / seconds / 1e9})
    return out


def peak_rss_mb(cfg: SNNSettings, encoder: str, population, batch, chunk) -> float:
    """Peak resident memory of a fresh process that evaluates one chunked generation."""
    code = (
        "import torch\n"
        "from snn_es.benchmark import _setup\n"
        "from snn_es.es.evaluate import PopulationTask, evaluate_population\n"
        "from snn_es.settings import SNNSettings\n"
        f"cfg, m, layout, s, x, y = _setup(SNNSettings(**{asdict(cfg)!r}), {population}, "
        f"{batch})\n"
        f"task = PopulationTask(cfg, layout, {encoder!r}, 0, fused=True)\n"
        f"evaluate_population('chunked', s, 0, x, y, task, {chunk})\n"
        # VmHWM: this process's own peak (ru_maxrss would inherit the parent's across exec)
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def run_benchmark(networks: dict[str, SNNSettings], encoders: list[str], population: int,
                  batch: int, chunk_sizes: list[int], repeats: int, memory_chunks: list[int],
                  low_rank: int = 1) -> pd.DataFrame:
    """Time every implementation for each dataset's network (``networks``: dataset name ->
    its SNN, input shape and T included) and encoder."""
    torch.manual_seed(0)
    matmul = matmul_flops_per_s()
    rows = []
    for dataset, cfg in networks.items():
        steps = cfg.num_steps
        for encoder in encoders:
            part = measure(dataset, cfg, encoder, population, batch, chunk_sizes, repeats,
                           low_rank)
            print(pd.DataFrame(part).to_string(), flush=True)
            base = next(r for r in part if r["implementation"] == "snntorch_loop")
            limit = next(r for r in part if r["implementation"] == "inference_limit")
            for row in part:
                row["ratio_to_snntorch_loop"] = row["evals_per_s"] / base["evals_per_s"]
                row["ratio_to_inference_limit"] = row["evals_per_s"] / limit["evals_per_s"]
                row["flops_share"] = row["gflops_per_s"] * 1e9 / matmul
                rows.append(row)
            for chunk in memory_chunks:
                rows.append({"implementation": f"chunked_peak_rss_chunk{chunk}",
                             "dataset": dataset, "encoder": encoder, "P": population,
                             "B": batch, "T": steps, "setting": chunk,
                             "peak_rss_mb": peak_rss_mb(cfg, encoder, population, batch,
                                                        chunk)})
    frame = pd.DataFrame(rows)
    frame.insert(3, "device", "cpu")
    frame["threads"] = torch.get_num_threads()
    frame["matmul_gflops_per_s"] = matmul / 1e9
    return frame
