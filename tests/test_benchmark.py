"""The throughput benchmark runs on a tiny size; the fast paths score like the reference."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from snn_es.benchmark import _setup, network_flops, run_benchmark
from snn_es.es import flip_delta
from snn_es.es.evaluate import PopulationTask, evaluate_population
from snn_es.es.run import es_minibatch
from snn_es.settings import SNNSettings


def test_network_flops_counts_convs_and_linear():
    cfg = SNNSettings(input_shape=(1, 4, 4), channels=(2,), num_steps=3, num_classes=10)
    conv = 2 * 2 * 1 * 9 * 4 * 4
    linear = 2 * 10 * (2 * 2 * 2)
    assert network_flops(cfg) == 3 * (conv + linear)


def test_benchmark_runs_on_a_tiny_size():
    mnist = SNNSettings(input_shape=(1, 28, 28), channels=(2, 4), num_steps=2)
    frame = run_benchmark({"mnist": mnist}, ["poisson", "repeat"], population=4, batch=4,
                          chunk_sizes=[2, 4], repeats=1, memory_chunks=[2],
                          scaling_populations=(2, 4), scaling_batch=2, scaling_chunk=2,
                          scaling_encoders=("repeat",), image_chunks=(2, 4), rounds=2)
    timed = frame[frame["evals_per_s"].notna() & (frame["implementation"] != "scaling_lowrank_r1")]
    rows = {"snntorch_loop", "sequential", "chunked", "chunked_eager", "chunked_lowrank_r1",
            "chunked_lowrank_r1_layer_major", "inference_limit"}
    if flip_delta.available():  # its C++ kernel builds where a compiler is
        rows.add("chunked_lowrank_r1_flip_delta")
    assert set(timed["implementation"]) == rows
    assert len(timed) == 2 * len(rows) and (timed["evals_per_s"] > 0).all()
    assert set(frame["images"]) == {"random"}
    # both sides of every target ratio are timed again in shared rounds; the rows no target
    # reads keep their selection time
    once = {"chunked_eager", "chunked_lowrank_r1_layer_major"}
    assert set(timed[timed.implementation.isin(once)]["timing"]) == {
        "fastest setting, timed once"}
    assert set(timed[~timed.implementation.isin(once)]["timing"]) == {
        "median of 2 rotating rounds"}
    loop = timed[timed.implementation == "snntorch_loop"]
    assert (loop["ratio_to_snntorch_loop"] == 1).all()
    limit = timed[timed.implementation == "inference_limit"]
    assert (limit["ratio_to_inference_limit"] == 1).all()
    assert (timed["flops_share"] > 0).all()
    assert set(timed[timed.implementation == "chunked"]["setting"]) <= {"2x2", "2x4", "4x2",
                                                                        "4x4"}
    memory = frame[frame["implementation"] == "chunked_peak_rss_chunk2"]
    assert len(memory) == 2 and (memory["peak_memory_mb"] > 0).all()
    curve = frame[frame["implementation"] == "scaling_lowrank_r1"]
    assert list(curve["P"]) == [2, 4] and set(curve["encoder"]) == {"repeat"}
    assert (curve["peak_memory_mb"] > 0).all() and (curve["evals_per_s"] > 0).all()


def test_benchmark_times_the_first_es_minibatch_of_real_images():
    """Given a subset's training images, every row times ES generation 0's minibatch of them
    (the images the flip-delta row's work depends on), and the table says so."""
    cfg = SNNSettings(input_shape=(1, 8, 8), channels=(2, 4), num_steps=2)
    gen = torch.Generator().manual_seed(0)
    train = (torch.randint(0, 256, (12, 1, 8, 8), generator=gen, dtype=torch.uint8),
             torch.randint(0, 10, (12,), generator=gen))
    images, labels = _setup(cfg, 4, 6, train=train)[4:]
    expected_images, expected_labels = es_minibatch(*train, seed=0, generation=0, batch_size=6)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    frame = run_benchmark({"tiny": cfg}, ["repeat"], population=4, batch=6, chunk_sizes=[2],
                          repeats=1, memory_chunks=[], train={"tiny": train},
                          images_label="subset test")
    assert set(frame["images"]) == {"subset test"} and (frame["evals_per_s"] > 0).all()
    with pytest.raises(ValueError, match="benchmark.batch = 16 but the subset has only 12"):
        _setup(cfg, 4, 16, train=train)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("encoder", ["poisson", "repeat"])
def test_evaluators_score_like_the_snntorch_module(encoder, fused):
    cfg = SNNSettings(input_shape=(1, 28, 28), channels=(2, 4), num_steps=3)
    cfg, model, layout, strategy, images, labels = _setup(cfg, 4, 6)
    model, images = model.double(), images.double()
    strategy.theta = strategy.theta.double()
    task = PopulationTask(cfg, layout, encoder, seed=0, fused=fused)
    fitness, _ = evaluate_population("chunked", strategy, 0, images, labels, task, 2)
    x = task.inputs(images, 0, None)
    x_seq = x.unsqueeze(0).expand(cfg.num_steps, *x.shape) if task.static_input else x
    with torch.no_grad():
        for member in range(4):
            torch.nn.utils.vector_to_parameters(strategy.member(0, member), model.parameters())
            logits, _ = model(x_seq)
            assert float(-F.cross_entropy(logits, labels)) == pytest.approx(
                float(fitness[member]), abs=1e-9)


def test_gpu_benchmark_command_runs_on_the_cpu(tmp_path):
    """The command scripts/gpu_benchmark.sh runs on a GPU, here on the CPU at a tiny size."""
    from snn_es.benchmark import main

    out = tmp_path / "throughput_gpu.csv"
    main(["--device", "cpu", "--out", str(out), "--networks",
          '{"mnist": {"input_shape": [1, 28, 28], "channels": [2, 4]}}', "--population", "4",
          "--batch", "4", "--steps", "2", "--chunks", "2", "--repeats", "1",
          "--scaling-populations", "2", "4", "--scaling-batch", "2", "--scaling-chunk", "2",
          "--image-chunks", "2"])
    table = pd.read_csv(out)
    assert set(table["device_name"]) == {"cpu"}
    assert (table[table.implementation == "inference_limit"]["ratio_to_inference_limit"] == 1).all()
    assert list(table[table.implementation == "scaling_lowrank_r1"]["P"]) == [2, 4]
