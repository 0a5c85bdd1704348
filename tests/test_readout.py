"""Readout-only ES steps (``es.readout_steps``): the linear shortcut equals the full forward,
the steps touch only the readout, runs resume bit for bit, and the steps help learning."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from snn_es.encoders import encode
from snn_es.es.params import ParamLayout
from snn_es.es.readout import (
    ReadoutES,
    low_rank_factors,
    low_rank_gradient,
    low_rank_logits,
    readout_features,
    readout_logits,
    readout_settings,
)
from snn_es.es.strategy import OpenAIES
from snn_es.es.run import initial_theta as run_initial_theta
from snn_es.es.run import load_checkpoint, run_es
from snn_es.models import make_snn, snn_functional_forward
from snn_es.seeding import generator_from
from snn_es.settings import ESSettings, ExecutionSettings, canonical
from test_es import (
    ES,
    MNIST_LIKE_CFG,
    TINY,
    TINY_ES,
    TINY_EXEC,
    initial_theta,
    mnist_like_subset,
    run,
    tiny_subset,
    untimed,
)

READOUT_ES = replace(TINY_ES, readout_steps=2, readout_population=8, readout_batch_size=12,
                     readout_sigma=0.05, readout_lr=0.03)


@pytest.mark.parametrize("encoder", ["repeat", "poisson", "deterministic"])
def test_readout_logits_equal_the_full_forward(encoder):
    """Members that differ only in the readout: logits from the centre's features through
    the linear readout equal each member's own full forward pass (float64)."""
    cfg = TINY
    model = make_snn(cfg, 3).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    images = torch.rand(5, *cfg.input_shape, generator=generator_from(0, "img"),
                        dtype=torch.float64)
    static = encoder == "repeat"
    x = images if static else encode(encoder, images, cfg.num_steps,
                                     generator_from(0, "spk")).double()
    gen = generator_from(0, "readouts")
    weight = torch.randn(3, *params["fc.weight"].shape, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, *params["fc.bias"].shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        features = readout_features(params, x, cfg, static, fused=False)
        fast = readout_logits(features, weight, bias, cfg)
        for c in range(3):
            member = {**params, "fc.weight": weight[c], "fc.bias": bias[c]}
            full, _ = snn_functional_forward(member, x, cfg, static_input=static)
            torch.testing.assert_close(fast[c], full, rtol=0, atol=1e-10)
    assert fast.abs().max() > 0.1  # non-trivial logits


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_readout_logits_equal_the_materialised_members(rank):
    """The factored shortcut (s B_p, then A_p) gives the logits of the dense members."""
    cfg = TINY
    layout = ParamLayout.of(make_snn(cfg, 0))
    size = sum(torch.Size(s).numel() for s in layout.shapes[-2:])
    theta = initial_theta().double()
    strategy = OpenAIES(theta[-size:], replace(READOUT_ES, rank=rank, population=6), 5,
                        shapes=layout.shapes[-2:])
    features = torch.rand(7, cfg.num_features, generator=generator_from(1, "s"),
                          dtype=torch.float64)
    members = strategy.members(2, 0, 6)
    dense = readout_logits(features, members[:, :-10].reshape(6, 10, -1), members[:, -10:], cfg)
    torch.testing.assert_close(low_rank_logits(features, strategy, 2, cfg), dense, rtol=0,
                               atol=1e-12)
    assert not torch.allclose(dense[0], dense[1])  # the members differ


@pytest.mark.parametrize("rank", [0, 1])
def test_readout_steps_move_only_the_readout_and_are_deterministic(rank):
    subset = tiny_subset()
    layout = ParamLayout.of(make_snn(TINY, 0))
    theta = initial_theta()
    runs = []
    for _ in range(2):
        current = theta.clone()
        steps = ReadoutES(TINY, layout, replace(READOUT_ES, rank=rank), 0, "poisson", current)
        for generation in range(3):
            fitness = steps.step(current, generation, subset["train_images"],
                                 subset["train_labels"])
            assert fitness.shape == (8,) and torch.isfinite(fitness).all()
        runs.append(current)
    size = steps.size
    assert size == layout.shapes[-2][0] * layout.shapes[-2][1] + layout.shapes[-1][0]
    assert torch.equal(runs[0][:-size], theta[:-size])  # convs untouched
    assert not torch.equal(runs[0][-size:], theta[-size:])  # the readout moved
    assert torch.equal(runs[0], runs[1])  # seeded: the same run twice


def test_readout_settings_and_validation(tmp_path):
    settings = readout_settings(READOUT_ES)
    assert (settings.population, settings.batch_size, settings.sigma, settings.lr) == \
        (8, 12, 0.05, 0.03)
    assert settings.generations == READOUT_ES.generations * 2
    assert settings.rank == READOUT_ES.rank and settings.readout_steps == 0
    assert READOUT_ES.readout_evaluations == 6 * 2 * 8 * 12
    with pytest.raises(ValueError, match="readout_population must be an even number"):
        ESSettings(readout_population=7)
    with pytest.raises(ValueError, match="readout_steps must be >= 0"):
        ESSettings(readout_steps=-1)
    spike_count = replace(TINY, readout="spike_count")
    with pytest.raises(ValueError, match="needs snn.readout: membrane"):
        run(tmp_path, "spike_count", cfg=spike_count, es=READOUT_ES)
    assert not (tmp_path / "spike_count.pt").exists()


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resume_with_readout_steps_is_bit_identical(tmp_path, stop_after):
    ref_metrics, ref_rows, ref_theta = run(tmp_path, "clean", es=READOUT_ES)
    assert ref_metrics["readout_sample_evaluations"] == READOUT_ES.readout_evaluations
    run(tmp_path, "killed", es=READOUT_ES, stop_after=stop_after)
    assert load_checkpoint(tmp_path / "killed.pt")["readout"]["steps"] == 2 * stop_after
    metrics, rows, theta = run(tmp_path, "killed", es=READOUT_ES)
    assert torch.equal(theta, ref_theta)
    assert untimed(rows) == untimed(ref_rows)


def test_readout_steps_do_not_depend_on_the_evaluator(tmp_path):
    _, _, sequential = run(tmp_path, "seq", es=READOUT_ES, mode="sequential", encoder="repeat")
    _, _, chunked = run(tmp_path, "chunk", es=READOUT_ES, mode="chunked", encoder="repeat",
                        execution=replace(TINY_EXEC, chunk_size=2))
    torch.testing.assert_close(chunked, sequential, rtol=0, atol=1e-6)


def test_readout_steps_speed_up_learning(tmp_path):
    """On the tiny MNIST-shaped task, 20 generations with 2 readout steps each end ahead of
    the same 20 generations without them."""
    subset, cfg = mnist_like_subset(), MNIST_LIKE_CFG
    base = ES(population=16, sigma=0.05, lr=0.03, generations=20, batch_size=32, eval_every=10)
    with_readout = replace(base, readout_steps=2, readout_population=64, readout_batch_size=64,
                           readout_sigma=0.05, readout_lr=0.03)
    execution = ExecutionSettings(chunk_size=16, checkpoint_every=100, fused=False)
    accuracies = {}
    for label, es in [("plain", base), ("readout", with_readout)]:
        metrics, _, _ = run_es(subset, cfg, es, "repeat", 0, "chunked", tmp_path / f"{label}.pt",
                               execution, progress=False)
        accuracies[label] = metrics["final_test_acc"]
    assert accuracies["readout"] >= accuracies["plain"] + 0.1, accuracies


@pytest.mark.parametrize("rank", [0, 1])
def test_fixed_tensors_get_no_noise_and_no_step(rank):
    """``fixed`` zeroes a tensor's noise (members keep the centre's value, the step is 0)
    and leaves every other tensor's noise exactly as without it."""
    layout = ParamLayout.of(make_snn(TINY, 0))
    theta = initial_theta()
    fixed = tuple(name.startswith("fc.") for name in layout.names)
    settings = replace(TINY_ES, rank=rank)
    free = OpenAIES(theta, settings, 4, shapes=layout.shapes)
    held = OpenAIES(theta, settings, 4, shapes=layout.shapes, fixed=fixed)
    size = sum(torch.Size(s).numel() for s in layout.shapes[-2:])
    for member in range(settings.population):
        torch.testing.assert_close(held.member(0, member)[:-size], free.member(0, member)[:-size],
                                   rtol=0, atol=0)
        assert torch.equal(held.member(0, member)[-size:], theta[-size:])
    fitness = torch.arange(settings.population, dtype=torch.float64)
    held.tell(0, fitness)
    assert torch.equal(held.theta[-size:], theta[-size:])
    assert not torch.equal(held.theta[:-size], theta[:-size])


def test_generations_that_leave_the_readout_train_only_the_hidden_layers(tmp_path):
    """perturb_readout false: the readout moves only through the readout-only steps."""
    es = replace(READOUT_ES, perturb_readout=False, rank=1)
    layout = ParamLayout.of(make_snn(TINY, 0))
    steps_only = ReadoutES(TINY, layout, es, 0, "poisson", initial_theta())
    run(tmp_path, "held", es=es, stop_after=2)
    moments = load_checkpoint(tmp_path / "held.pt")["strategy"]["m"]
    assert not moments[-steps_only.size:].any()  # the generations never stepped the readout
    assert moments[:-steps_only.size].abs().sum() > 0
    metrics, rows, theta = run(tmp_path, "held", es=es)
    assert metrics["finished"]
    start = initial_theta()
    assert not torch.equal(theta[:-steps_only.size], start[:-steps_only.size])
    assert not torch.equal(theta[-steps_only.size:], start[-steps_only.size:])
    with pytest.raises(ValueError, match="perturb_readout: false needs readout_steps > 0"):
        replace(TINY_ES, perturb_readout=False)


@pytest.mark.parametrize("encoder", ["poisson", "repeat"])
def test_the_frozen_network_control_runs_only_the_readout_steps(tmp_path, encoder):
    """train_hidden false: no full generation, the convs keep their initial weights, and the
    readout is exactly what the readout-only steps alone make of the initial network."""
    es = replace(READOUT_ES, perturb_readout=False, train_hidden=False)
    metrics, rows, theta = run(tmp_path, "frozen", es=es, encoder=encoder)
    start, layout = run_initial_theta(TINY, es, 0)
    oracle = start.clone()
    steps = ReadoutES(TINY, layout, es, 0, encoder, oracle)
    subset = tiny_subset()
    for generation in range(es.generations):
        steps.step(oracle, generation, subset["train_images"], subset["train_labels"])
    assert torch.equal(theta, oracle)
    assert torch.equal(theta[:-steps.size], start[:-steps.size])
    assert not torch.equal(theta[-steps.size:], start[-steps.size:])
    assert metrics["finished"] and metrics["evaluations"] == 0
    assert metrics["member_sample_evaluations"] == metrics["member_evals_per_s"] == 0
    assert metrics["readout_sample_evaluations"] == es.readout_evaluations
    assert all(row["batch_acc"] is None and row["grad_norm"] is None for row in rows)
    # the twin with the hidden layers trained shares the readout steps' seeds, not the result
    _, _, trained = run(tmp_path, "trained", es=replace(es, train_hidden=True), encoder=encoder)
    assert not torch.equal(trained[:-steps.size], start[:-steps.size])


def test_the_frozen_control_setting_is_checked_and_stays_out_of_older_specs():
    assert "train_hidden" not in canonical(ESSettings())  # committed runs keep their spec
    frozen = ESSettings(train_hidden=False, perturb_readout=False)
    assert canonical(frozen)["train_hidden"] is False
    for bad in ({"readout_steps": 0, "perturb_readout": True}, {"perturb_readout": True}):
        with pytest.raises(ValueError, match="train_hidden: false .* needs readout_steps > 0"):
            ESSettings(train_hidden=False, **bad)


def test_low_rank_gradient_equals_the_strategys_own():
    """The factored readout gradient is the strategy's dense one (float64)."""
    layout = ParamLayout.of(make_snn(TINY, 0))
    size = sum(torch.Size(s).numel() for s in layout.shapes[-2:])
    fitness = torch.randn(8, generator=generator_from(0, "f"))
    strategy = OpenAIES(initial_theta().double()[-size:],
                        replace(READOUT_ES, rank=2, population=8), 7, shapes=layout.shapes[-2:])
    factors = low_rank_factors(strategy, 3)
    torch.testing.assert_close(low_rank_gradient(strategy, 3, fitness, factors),
                               strategy.gradient(3, fitness), rtol=0, atol=1e-12)
