"""Throughput of one ES generation (P members x B images x T steps), side by side.

Rows (member-image evaluations per second; one evaluation = one image through T steps):
- ``snntorch_loop``: the snnTorch module network, weights loaded member by member;
- ``sequential``: the project's fast forward (compiled pool + LIF kernels, channels-last
  convs), one member at a time;
- ``chunked``: full-rank members in chunks (depth-first: member by member through every
  layer, one readout per member), at its best chunk size;
- ``chunked_eager``: the same without compiled kernels or channels-last (what those levers
  are worth);
- ``chunked_lowrank_r{r}``: rank-r (EGGROLL-style) members, depth-first, the first layer's
  ``W x`` shared by the chunk when its input is;
- ``chunked_lowrank_r{r}_layer_major``: rank-r members with EGGROLL's layout, every layer's
  base op once over members x images and a rank-r correction per member;
- ``chunked_lowrank_r{r}_flip_delta``: rank-r members, depth-first, each member's second
  layer from the centre's conv plus its flipped input spikes (ES mode ``flip_delta``; CPU
  only, where its C++ kernel builds). Its work depends on how many first-layer spikes a
  member flips, so the images matter: real ones flip far fewer than random noise;
- ``inference_limit``: the strict limit. The centre network alone, no ES work, on the same
  P x B member-images, with the inputs encoded before the clock starts (an ES generation
  also draws its spikes once); batches of P x B split at the fastest size.
The images are the first ES generation's minibatch of a subset's training images where one
is given (the ``benchmark`` rule: ``benchmark.subset``), else uniform noise (column
``images``).
``flops_share``: the network's nominal FLOPs (every conv and linear layer at every step) per
second, as a share of a large float32 matmul's FLOP/s measured in the same run.

The scaling rows (``scaling``) time the fastest chunked evaluator for populations P at a
fixed B, with peak memory: resident memory of a fresh process on CPU, the CUDA allocator's
peak on a GPU.

On CPU, ``make benchmark`` (rule ``benchmark``, settings in the config's ``benchmark``)
writes ``results/tables/throughput.csv``; on a GPU machine ``scripts/gpu_benchmark.sh``
writes ``results/tables/throughput_gpu.csv`` through ``python -m snn_es.benchmark``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, Callable

import pandas as pd
import torch

from snn_es.allocator import keep_freed_memory
from snn_es.encoders import encode
from snn_es.es import flip_delta
from snn_es.es.evaluate import PopulationTask, evaluate_population
from snn_es.es.strategy import OpenAIES
from snn_es.models import make_snn, snn_functional_forward
from snn_es.seeding import generator_from
from snn_es.settings import ESSettings, SNNSettings

Tensor = torch.Tensor


def network_flops(cfg: SNNSettings) -> float:
    """Nominal FLOPs of one image through T steps (2 per multiply-add, convs and linear)."""
    channels_in, height, width = cfg.input_shape
    flops = 0.0
    for channels_out in cfg.channels:
        flops += 2 * channels_out * channels_in * cfg.kernel_size**2 * height * width
        channels_in, height, width = channels_out, height // 2, width // 2
    flops += 2 * cfg.num_classes * cfg.num_features
    return flops * cfg.num_steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], repeats: int, device: torch.device,
          warm_up: bool = True) -> float:
    if warm_up:
        fn()  # torch.compile, allocator
    times = []
    for _ in range(repeats):
        _sync(device)
        tick = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def matmul_flops_per_s(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return 2 * size**3 / _time(lambda: a @ b, repeats, device)


def _setup(cfg: SNNSettings, population: int, batch: int, rank: int = 0,
           device: str | torch.device = "cpu", train: tuple[Tensor, Tensor] | None = None):
    """The centre network, its layout, a strategy of ``population`` (rank ``rank``) on
    ``device``, and B images (CPU: spikes are drawn there) with labels: ES generation 0's
    minibatch of ``train`` (a subset's training images and labels), else uniform noise."""
    from snn_es.es.run import es_minibatch, initial_theta

    es = ESSettings(population=population, rank=rank, generations=1)
    # an ES run's own starting weights (the default init_conv_scale, init_readout_scale):
    # their spike rates set the flip-delta layout's work
    theta, layout = initial_theta(cfg, es, 0)
    model = make_snn(cfg, 0)
    torch.nn.utils.vector_to_parameters(theta, model.parameters())
    model = model.to(device)
    strategy = OpenAIES(theta.to(device), es, seed=0, shapes=layout.shapes)
    if train is not None:
        if len(train[1]) < batch:
            raise ValueError(f"benchmark.batch = {batch} but the subset has only "
                             f"{len(train[1])} training images; lower the batch or use a "
                             f"bigger subset")
        images, labels = es_minibatch(*train, seed=0, generation=0, batch_size=batch)
    else:
        gen = generator_from(0, "benchmark-images")
        images = torch.rand(batch, *cfg.input_shape, generator=gen)
        labels = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    return cfg, model, layout, strategy, images, labels


def inference_limit(cfg: SNNSettings, model: torch.nn.Module, task: PopulationTask,
                    images: Tensor, population: int, repeats: int,
                    device: torch.device) -> tuple[int, float, Callable[[], None]]:
    """(best batch size, seconds, the timed forward) of the centre network's forward over
    P x B member-images, inputs encoded once before timing, in batches of the fastest size
    (B/4 to 8B)."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    x = task.inputs(images, 0, None).to(device)  # [T, B, ...] or [B, ...] (repeat)
    batch_dim, batch = (0 if task.static_input else 1), len(images)
    total, timed = population * batch, []
    for size in sorted({batch // 4, batch // 2, batch, 2 * batch, 4 * batch, 8 * batch}):
        if size < 1 or size > total or total % size or (size < batch and batch % size):
            continue
        block = (x.narrow(batch_dim, 0, size) if size <= batch
                 else torch.cat([x] * (size // batch), dim=batch_dim))

        @torch.no_grad()
        def forward(block=block, size=size) -> None:
            for _ in range(total // size):
                snn_functional_forward(params, block, cfg, static_input=task.static_input,
                                       fused=True)

        timed.append((size, _time(forward, repeats, device), forward))
    return min(timed, key=lambda item: item[1])


def measure(dataset: str, cfg: SNNSettings, encoder: str, population: int, batch: int,
            chunk_sizes: list[int], repeats: int, low_rank: int = 1, device: str = "cpu",
            image_chunks: tuple[int | None, ...] = (None,),
            train: tuple[Tensor, Tensor] | None = None,
            rounds: int = 0) -> list[dict[str, Any]]:
    """Every implementation's time for one generation of this network and encoder: each
    candidate setting timed once (after a warm-up) to pick the fastest; then, with
    ``rounds``, the loop, the sequential and every fast evaluator at their fastest setting,
    and the inference limit are timed again in ``rounds`` rounds of rotating order and
    their median is reported (``timing``). This VM's speed drifts by 10-20% within
    minutes, so a ratio whose two sides were timed minutes apart can be off by that much;
    in shared rounds both sides see the same drift."""
    dev = torch.device(device)
    cfg, model, layout, strategy, images, labels = _setup(cfg, population, batch, 0, dev,
                                                          train)
    low_rank_strategy = _setup(cfg, population, batch, low_rank, dev)[3]
    task = PopulationTask(cfg, layout, encoder, seed=0, fused=True)
    eager = PopulationTask(cfg, layout, encoder, seed=0, fused=False)
    evals = population * batch
    rows = []

    @torch.no_grad()
    def snntorch_loop():
        x_seq = encode(encoder, images, cfg.num_steps, generator_from(0, "spikes")).to(dev)
        for member in range(population):
            torch.nn.utils.vector_to_parameters(strategy.member(0, member), model.parameters())
            model(x_seq)

    def best_chunk(es: OpenAIES, on: PopulationTask, layout: str | None = None,
                   pieces: tuple[int | None, ...] = (None,)):
        """(setting "members x images", seconds, the timed call) of the fastest chunking."""
        timed = []
        for c in chunk_sizes:
            for b in pieces:
                def call(c=c, b=b):
                    return evaluate_population("chunked", es, 0, images, labels, on, c, layout, b)
                timed.append((f"{c}x{b or batch}", _time(call, repeats, dev), call))
        return min(timed, key=lambda item: item[1])

    def time_of(mode: str, es: OpenAIES, on: PopulationTask):
        def call():
            return evaluate_population(mode, es, 0, images, labels, on)
        return _time(call, repeats, dev), call

    # (name, setting, seconds, the call timed again in the rounds or None)
    rows.append(("snntorch_loop", None, _time(snntorch_loop, repeats, dev), snntorch_loop))
    rows.append(("sequential", None, *time_of("sequential", strategy, task)))
    rows.append(("chunked", *best_chunk(strategy, task, None, image_chunks)))
    rows.append(("chunked_eager", *best_chunk(strategy, eager)[:2], None))
    lowrank = f"chunked_lowrank_r{low_rank}"
    rows.append((lowrank, *best_chunk(low_rank_strategy, task, "depth_first", image_chunks)))
    rows.append((f"{lowrank}_layer_major", *best_chunk(low_rank_strategy, task,
                                                        "layer_major")[:2], None))
    if dev.type == "cpu" and flip_delta.available():  # a CPU kernel, built at first use
        rows.append((f"{lowrank}_flip_delta", *best_chunk(low_rank_strategy, task,
                                                          "flip_delta", image_chunks)))
    rows.append(("inference_limit", *inference_limit(cfg, model, task, images, population,
                                                     repeats, dev)))
    seconds = {name: time for name, _, time, _ in rows}
    timing = {name: "fastest setting, timed once" for name, *_ in rows}
    calls = [(name, call) for name, _, _, call in rows if call is not None]
    if rounds:
        timed: dict[str, list[float]] = {name: [] for name, _ in calls}
        for round_ in range(rounds):
            shift = round_ % len(calls)  # rotate: none always runs first or last
            for name, call in calls[shift:] + calls[:shift]:
                timed[name].append(_time(call, 1, dev, warm_up=False))
        for name, values in timed.items():
            seconds[name] = statistics.median(values)
            timing[name] = f"median of {rounds} rotating rounds"
    return [{**_row(name, dataset, encoder, cfg, population, batch, setting, seconds[name],
                    device), "timing": timing[name]} for name, setting, _, _ in rows]


def _row(name: str, dataset: str, encoder: str, cfg: SNNSettings, population: int, batch: int,
         setting: Any, seconds: float, device: str) -> dict[str, Any]:
    evals = population * batch
    return {"implementation": name, "dataset": dataset, "encoder": encoder, "device": device,
            "P": population, "B": batch, "T": cfg.num_steps, "setting": setting,
            "seconds_per_generation": seconds, "evals_per_s": evals / seconds,
            "gflops_per_s": network_flops(cfg) * evals / seconds / 1e9}


def peak_rss_mb(cfg: SNNSettings, encoder: str, population: int, batch: int, chunk: int,
                rank: int = 0) -> float:
    """Peak resident memory of a fresh process that evaluates one chunked generation."""
    code = (
        "import torch\n"
        "from snn_es.benchmark import _setup\n"
        "from snn_es.es.evaluate import PopulationTask, evaluate_population\n"
        "from snn_es.settings import SNNSettings\n"
        f"cfg, m, layout, s, x, y = _setup(SNNSettings(**{asdict(cfg)!r}), {population}, "
        f"{batch}, {rank})\n"
        f"task = PopulationTask(cfg, layout, {encoder!r}, 0, fused=True)\n"
        f"evaluate_population('chunked', s, 0, x, y, task, {chunk})\n"
        # VmHWM: this process's own peak (ru_maxrss would inherit the parent's across exec)
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def scaling(dataset: str, cfg: SNNSettings, encoder: str, populations: list[int], batch: int,
            chunk: int, rank: int, repeats: int, device: str = "cpu",
            image_chunk: int | None = None,
            train: tuple[Tensor, Tensor] | None = None) -> list[dict[str, Any]]:
    """Evaluations per second and peak memory of the chunked low-rank evaluator (the
    device's default layout) against the population size P, at a fixed B."""
    dev = torch.device(device)
    rows = []
    for population in populations:
        cfg, _, layout, strategy, images, labels = _setup(cfg, population, batch, rank, dev,
                                                          train)
        task = PopulationTask(cfg, layout, encoder, seed=0, fused=True)
        step = min(chunk, population)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        seconds = _time(lambda: evaluate_population("chunked", strategy, 0, images, labels,
                                                    task, step, None, image_chunk), repeats, dev)
        row = _row(f"scaling_lowrank_r{rank}", dataset, encoder, cfg, population, batch, step,
                   seconds, device)
        row["peak_memory_mb"] = (torch.cuda.max_memory_allocated(dev) / 2**20
                                 if dev.type == "cuda"
                                 else peak_rss_mb(cfg, encoder, population, batch, step, rank))
        rows.append(row)
        print(pd.DataFrame([row]).to_string(), flush=True)
    return rows


def run_benchmark(networks: dict[str, SNNSettings], encoders: list[str], population: int,
                  batch: int, chunk_sizes: list[int], repeats: int, memory_chunks: list[int],
                  low_rank: int = 1, scaling_populations: tuple[int, ...] = (),
                  scaling_batch: int = 32, scaling_chunk: int = 16,
                  scaling_encoders: tuple[str, ...] = (), device: str = "cpu",
                  image_chunks: tuple[int | None, ...] = (None,),
                  train: dict[str, tuple[Tensor, Tensor]] | None = None,
                  images_label: str = "random", rounds: int = 0) -> pd.DataFrame:
    """Time every implementation for each dataset's network (``networks``: dataset name ->
    its SNN, input shape and T included) and encoder; then the population scaling curve.
    ``train``: dataset name -> a subset's training images and labels (``images_label``
    names them in the table); None: uniform noise."""
    train = train or {}
    keep_freed_memory()  # every row, the loop included, on the allocator ES runs use
    torch.manual_seed(0)
    matmul = matmul_flops_per_s(torch.device(device))
    rows = []
    for dataset, cfg in networks.items():
        for encoder in encoders:
            part = measure(dataset, cfg, encoder, population, batch, chunk_sizes, repeats,
                           low_rank, device, image_chunks, train.get(dataset), rounds)
            print(pd.DataFrame(part).to_string(), flush=True)
            base = next(r for r in part if r["implementation"] == "snntorch_loop")
            limit = next(r for r in part if r["implementation"] == "inference_limit")
            for row in part:
                row["ratio_to_snntorch_loop"] = row["evals_per_s"] / base["evals_per_s"]
                row["ratio_to_inference_limit"] = row["evals_per_s"] / limit["evals_per_s"]
                rows.append(row)
            if device == "cpu":
                for chunk in memory_chunks:
                    rows.append({"implementation": f"chunked_peak_rss_chunk{chunk}",
                                 "dataset": dataset, "encoder": encoder, "device": device,
                                 "P": population, "B": batch, "T": cfg.num_steps,
                                 "setting": chunk,
                                 "peak_memory_mb": peak_rss_mb(cfg, encoder, population, batch,
                                                               chunk)})
            if scaling_populations and encoder in scaling_encoders:
                rows += scaling(dataset, cfg, encoder, list(scaling_populations),
                                scaling_batch, scaling_chunk, low_rank, repeats, device,
                                image_chunks[0], train.get(dataset))
    frame = pd.DataFrame(rows)
    frame["flops_share"] = frame["gflops_per_s"] * 1e9 / matmul
    frame["images"] = images_label if train else "random"  # what the rows were timed on
    frame["threads"] = torch.get_num_threads()
    frame["matmul_gflops_per_s"] = matmul / 1e9
    frame["device_name"] = (torch.cuda.get_device_name(torch.device(device))
                            if device.startswith("cuda") else "cpu")
    return frame


def main(argv: list[str] | None = None) -> None:
    """The GPU benchmark's command line (the CPU one runs through Snakemake)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--networks", required=True,
                        help='JSON: dataset -> SNNSettings fields, e.g. {"cifar10": '
                             '{"input_shape": [3, 32, 32], "channels": [16, 32]}}')
    parser.add_argument("--encoders", nargs="+", default=["poisson", "repeat"])
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--chunks", type=int, nargs="+", default=[64])
    parser.add_argument("--image-chunks", type=int, nargs="+", default=[128])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rotating rounds in which the ratio rows are timed again")
    parser.add_argument("--low-rank", type=int, default=1)
    parser.add_argument("--scaling-populations", type=int, nargs="*", default=[])
    parser.add_argument("--scaling-batch", type=int, default=128)
    parser.add_argument("--scaling-chunk", type=int, default=1024)
    parser.add_argument("--scaling-encoders", nargs="*", default=["repeat"])
    parser.add_argument("--subset", default=None,
                        help="a subset file per dataset, e.g. results/subsets/{dataset}/big.pt: "
                             "time on its training images (default: uniform noise)")
    args = parser.parse_args(argv)
    networks = {name: SNNSettings(**{**fields, "num_steps": args.steps})
                for name, fields in json.loads(args.networks).items()}
    train = None
    if args.subset:
        from snn_es.subsets import load_subset

        subsets = {name: load_subset(args.subset.format(dataset=name)) for name in networks}
        train = {name: (s["train_images"], s["train_labels"]) for name, s in subsets.items()}
    frame = run_benchmark(networks, args.encoders, args.population, args.batch, args.chunks,
                          args.repeats, [], args.low_rank, tuple(args.scaling_populations),
                          args.scaling_batch, args.scaling_chunk, tuple(args.scaling_encoders),
                          args.device, tuple(args.image_chunks), train, args.subset or "random",
                          args.rounds)
    from snn_es.report import write_csv

    write_csv(frame, args.out)
    print(frame.to_string())


if __name__ == "__main__":
    main()
