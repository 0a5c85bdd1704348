"""Evolution strategies: the strategy's maths, evaluator equivalence, the run loop's
checkpoint/resume/divergence handling, determinism, and that ES actually learns.

Everything runs real components (no mocks) on tiny synthetic data, single-threaded.
"""

from __future__ import annotations

import warnings

from dataclasses import replace
from itertools import pairwise

import pytest
import torch

from snn_es.encoders import augment_images, encode
from snn_es.errors import UserError
from snn_es.es import flip_delta
from snn_es.es.evaluate import PopulationTask, evaluate_population
from snn_es.es.params import ParamLayout
from snn_es.es.run import ESDivergedError, es_minibatch, load_checkpoint, run_es
from snn_es.es.strategy import OpenAIES, centered_ranks
from snn_es.io import DamagedFileError
from snn_es.models import make_snn, snn_functional_forward
from snn_es.seeding import generator_from, seed_from
from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings

ENCODER_NAMES = ("poisson", "deterministic", "repeat", "latency")
TIMING_KEYS = {"wall_s", "member_evals_per_s"}

# A small SNN for the evaluator / run-loop tests.
TINY = SNNSettings(input_shape=(1, 12, 12), channels=(4, 8), num_steps=4)
# The strategy tests were written for plain OpenAI-ES: full-rank noise, constant lr.
PLAIN = dict(population=32, sigma=0.02, lr=0.01, lr_schedule="constant", rank=0,
             init_conv_scale=1.0, readout_steps=0, perturb_readout=True)


def ES(**changes) -> ESSettings:
    return ESSettings(**{**PLAIN, **changes})


def make_es(theta, settings: ESSettings, seed: int, generations: int, shapes=None) -> OpenAIES:
    return OpenAIES(theta, replace(settings, generations=generations), seed, shapes=shapes)


TINY_ES = ES(population=6, sigma=0.05, lr=0.03, generations=6, batch_size=8, eval_every=2)
TINY_EXEC = ExecutionSettings(chunk_size=4, checkpoint_every=2, fused=False)


def tiny_subset(num_train: int = 32, num_test: int = 16, shape=(1, 12, 12),
                seed: int = 0) -> dict[str, torch.Tensor]:
    """uint8 images and int64 labels in the layout ``run_es`` reads."""
    gen = generator_from(seed, "tiny-subset")
    return {
        "train_images": torch.randint(0, 256, (num_train, *shape), generator=gen,
                                      dtype=torch.uint8),
        "train_labels": torch.randint(0, 10, (num_train,), generator=gen),
        "test_images": torch.randint(0, 256, (num_test, *shape), generator=gen,
                                     dtype=torch.uint8),
        "test_labels": torch.randint(0, 10, (num_test,), generator=gen),
    }


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def initial_theta(cfg=TINY, seed=0) -> torch.Tensor:
    """The centre run_es starts from."""
    model = make_snn(cfg, seed_from(seed, "init"))
    return ParamLayout.of(model).flatten(dict(model.named_parameters()))


def run(tmp_path, name: str, subset=None, cfg=TINY, es=TINY_ES, execution=TINY_EXEC,
        mode="chunked", encoder="poisson", seed=0, **kwargs):
    return run_es(subset if subset is not None else tiny_subset(), cfg, es, encoder, seed, mode,
                  tmp_path / f"{name}.pt", execution, progress=False, **kwargs)


# --------------------------------------------------------------------------------------
# 1. Strategy unit checks
# --------------------------------------------------------------------------------------


def test_centered_ranks_range_order_and_ties():
    ranks = centered_ranks(torch.tensor([3.0, -1.0, 2.0, 10.0]))
    assert ranks.dtype == torch.float64
    torch.testing.assert_close(ranks, torch.tensor([1 / 6, -0.5, -1 / 6, 0.5],
                                                   dtype=torch.float64))

    fitness = torch.randn(101, generator=generator_from(0, "ranks"))
    ranks = centered_ranks(fitness)
    assert ranks.min() == -0.5 and ranks.max() == 0.5
    # a permutation of the evenly spaced grid, in the order of the fitness
    torch.testing.assert_close(ranks.sort().values,
                               torch.linspace(-0.5, 0.5, 101, dtype=torch.float64))
    assert torch.equal(ranks.argsort(), fitness.argsort())
    # invariant to monotone transformations of the fitness
    assert torch.equal(centered_ranks(fitness.exp() * 7 - 3), ranks)

    # ties: broken by member index (earlier member ranks lower), every time
    tied = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    expected = torch.tensor([2, 3, 0, 4, 1], dtype=torch.float64) / 4 - 0.5
    for _ in range(3):
        assert torch.equal(centered_ranks(tied), expected)
    assert torch.equal(centered_ranks(torch.zeros(4)),
                       torch.arange(4, dtype=torch.float64) / 3 - 0.5)


def test_antithetic_members_share_their_noise():
    theta = torch.randn(50, generator=generator_from(1), dtype=torch.float64)
    es = make_es(theta, ES(population=8, sigma=0.1), seed=5, generations=10)
    for generation in (0, 7):
        for pair in range(4):
            eps = es.noise(generation, pair)
            plus, minus = es.member(generation, 2 * pair), es.member(generation, 2 * pair + 1)
            torch.testing.assert_close(plus, theta + 0.1 * eps, rtol=0, atol=1e-15)
            torch.testing.assert_close(minus, theta - 0.1 * eps, rtol=0, atol=1e-15)
            torch.testing.assert_close((plus + minus) / 2, theta, rtol=0, atol=1e-15)
    # different pairs / generations get different noise
    assert not torch.allclose(es.noise(0, 0), es.noise(0, 1))
    assert not torch.allclose(es.noise(0, 0), es.noise(1, 0))
    # a slice of members is the stack of the single members, in any evaluation order
    late_first = es.member(3, 5)
    block = es.members(3, 2, 7)
    assert block.shape == (5, 50)
    assert torch.equal(block, torch.stack([es.member(3, i) for i in range(2, 7)]))
    assert torch.equal(block[3], late_first)
    # the centre is not moved by asking
    assert torch.equal(es.theta, theta)


def test_noise_is_a_function_of_seed_generation_and_pair():
    settings = ES(population=4, sigma=0.02)
    a = make_es(torch.zeros(30), settings, seed=9, generations=5)
    b = make_es(torch.ones(30), settings, seed=9, generations=5)
    # b draws lots of other noise first: regenerated noise must not depend on history
    for g in range(3):
        for p in range(5):
            b.noise(g, p)
    for g, p in [(0, 0), (2, 1), (4, 3)]:
        assert torch.equal(a.noise(g, p), b.noise(g, p))
        direct = torch.randn(30, generator=generator_from(9, "es-noise", g, p))
        assert torch.equal(a.noise(g, p), direct)
    other_seed = make_es(torch.zeros(30), settings, seed=10, generations=5)
    assert not torch.allclose(a.noise(0, 0), other_seed.noise(0, 0))
    # the dtype of theta sets the dtype of the noise (float64 runs stay float64)
    assert make_es(torch.zeros(3, dtype=torch.float64), settings, 9, 5).noise(0, 0).dtype \
        == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population": 5}, "even"),
        ({"population": 0}, "even"),
        ({"population": 1}, "even"),
        ({"sigma": 0.0}, "positive"),
        ({"lr": -0.1}, "positive"),
        ({"lr_schedule": "exponential"}, "lr_schedule"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"augment": "rotate"}, "augment must be one of none, flip, flip_translate"),
    ],
)
def test_es_settings_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ESSettings(**kwargs)


def test_tell_rejects_wrong_population_and_foreign_checkpoints():
    es = make_es(torch.zeros(4), ES(population=4), seed=0, generations=3)
    with pytest.raises(ValueError, match="expected 4 fitness values"):
        es.tell(0, torch.zeros(6))
    state = es.state_dict()
    for other in (make_es(torch.zeros(4), ES(population=4, lr=0.5), 0, 3),
                  make_es(torch.zeros(4), ES(population=4), 1, 3)):
        with pytest.raises(ValueError, match="different ES settings or seed"):
            other.load_state_dict(state)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedules_hit_their_endpoints(schedule):
    generations = 11
    settings = ES(sigma=0.1, sigma_final=0.01, lr=0.2, lr_schedule=schedule,
                          lr_final_ratio=0.05)
    es = make_es(torch.zeros(2), settings, seed=0, generations=generations)
    assert es.lr_at(0) == pytest.approx(0.2, abs=1e-15)
    assert es.lr_at(generations - 1) == pytest.approx(0.2 * 0.05, abs=1e-15)
    assert es.sigma_at(0) == pytest.approx(0.1, abs=1e-15)
    assert es.sigma_at(generations - 1) == pytest.approx(0.01, abs=1e-15)
    lrs = [es.lr_at(g) for g in range(generations)]
    sigmas = [es.sigma_at(g) for g in range(generations)]
    assert all(a > b for a, b in pairwise(lrs))  # strictly decreasing
    assert all(a > b for a, b in pairwise(sigmas))
    # both shapes pass through the mean of the endpoints halfway
    assert es.lr_at(5) == pytest.approx((0.2 + 0.01) / 2)
    assert es.sigma_at(5) == pytest.approx((0.1 + 0.01) / 2)
    if schedule == "cosine":  # flat at both ends, unlike linear
        assert es.lr_at(0) - es.lr_at(1) < es.lr_at(4) - es.lr_at(5)
    else:
        assert es.lr_at(0) - es.lr_at(1) == pytest.approx(es.lr_at(4) - es.lr_at(5))

    constant = make_es(torch.zeros(2), ES(sigma=0.1, lr=0.2), 0, generations)
    assert {constant.lr_at(g) for g in range(generations)} == {0.2}
    assert {constant.sigma_at(g) for g in range(generations)} == {0.1}


def test_gradient_is_the_rank_weighted_antithetic_sum():
    settings = ES(population=6, sigma=0.3)
    es = make_es(torch.zeros(7, dtype=torch.float64), settings, seed=2, generations=4)
    fitness = torch.tensor([0.5, 2.0, -1.0, 3.0, 0.0, 1.0])
    ranks = centered_ranks(fitness)
    expected = sum((ranks[2 * k] - ranks[2 * k + 1]) * es.noise(1, k) for k in range(3))
    expected = expected / (6 * 0.3)
    torch.testing.assert_close(es.gradient(1, fitness), expected, rtol=0, atol=1e-15)


def test_first_adam_step_moves_every_coordinate_by_lr_uphill():
    # Adam with bias correction: step 1 is lr * g / (|g| + eps) ~= lr * sign(g)
    settings = ES(population=4, sigma=0.1, lr=0.01)
    theta0 = torch.zeros(20, dtype=torch.float64)
    es = make_es(theta0, settings, seed=3, generations=2)
    pop = es.members(0, 0, 4)
    fitness = pop.sum(1)  # increases along the all-ones direction
    grad = es.tell(0, fitness)
    assert es.steps == 1
    torch.testing.assert_close(es.theta, 0.01 * grad.sign(), rtol=1e-4, atol=0)
    assert torch.equal(theta0, torch.zeros(20, dtype=torch.float64))  # input not aliased


# --------------------------------------------------------------------------------------
# 2. ES minimises a quadratic
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 0.05), ("sgd", 0.02)])
def test_es_minimises_a_quadratic(optimizer, lr):
    target = torch.linspace(-1, 1, 10, dtype=torch.float64)
    generations = 300
    settings = ES(population=20, sigma=0.1, lr=lr, optimizer=optimizer,
                          lr_schedule="cosine", lr_final_ratio=0.1)
    es = make_es(torch.zeros(10, dtype=torch.float64), settings, seed=3, generations=generations)
    start = float((es.theta - target).norm())
    assert start > 1.9
    for generation in range(generations):
        population = es.members(generation, 0, settings.population)
        es.tell(generation, -((population - target) ** 2).sum(1))
    # observed: ~0.0035 (adam), ~0.005 (sgd); a wrong sign diverges to > 10
    assert float((es.theta - target).norm()) < 0.05


# --------------------------------------------------------------------------------------
# 3. Sequential and chunked evaluators agree
# --------------------------------------------------------------------------------------


def _population(dtype: torch.dtype, gain: float = 2.0):
    model = make_snn(TINY, 0).to(dtype)
    layout = ParamLayout.of(model)
    # scaled-up weights so that every hidden layer spikes and the encoders matter
    theta = layout.flatten(dict(model.named_parameters())) * gain
    es = make_es(theta, ES(population=6, sigma=0.1), seed=1, generations=10)
    images = torch.rand(8, *TINY.input_shape, generator=generator_from(5), dtype=dtype)
    labels = torch.arange(8) % 10
    return es, layout, images, labels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("spike_noise", ["shared", "per_member"])
@pytest.mark.parametrize("encoder", ENCODER_NAMES)
def test_sequential_and_chunked_evaluators_agree(encoder, spike_noise, dtype):
    es, layout, images, labels = _population(dtype)
    task = PopulationTask(TINY, layout, encoder, seed=7, spike_noise=spike_noise)
    _check_evaluators_agree(es, task, images, labels, dtype)


@pytest.mark.parametrize("encoder", ["poisson", "repeat"])
def test_fused_evaluators_agree_with_the_reference(encoder, compiled_kernels):
    """The compiled pool + LIF path (torch.compile) gives the same fitness as the plain
    sequential evaluator."""
    es, layout, images, labels = _population(torch.float64)
    reference = PopulationTask(TINY, layout, encoder, seed=7)
    fused = PopulationTask(TINY, layout, encoder, seed=7, fused=True)
    fit_ref, acc_ref = evaluate_population("sequential", es, 3, images, labels, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compile failure would warn
        results = [evaluate_population(mode, es, 3, images, labels, fused, chunk_size=4)
                   for mode in ("sequential", "chunked")]
    for fit, acc in results:
        torch.testing.assert_close(fit, fit_ref, rtol=0, atol=1e-12)
        assert torch.equal(acc, acc_ref)


def _check_evaluators_agree(es, task, images, labels, dtype):
    generation = 3
    fit_seq, acc_seq = evaluate_population("sequential", es, generation, images, labels, task)
    assert fit_seq.shape == acc_seq.shape == (6,)
    assert fit_seq.dtype == dtype
    assert torch.isfinite(fit_seq).all()
    assert len(set(fit_seq.tolist())) == 6  # members really differ
    for chunk in (1, 3, 4, 6):
        fit_chunk, acc_chunk = evaluate_population("chunked", es, generation, images, labels,
                                                   task, chunk_size=chunk)
        # observed max |diff|: ~4e-16 in float64, ~2.4e-7 in float32
        torch.testing.assert_close(fit_chunk, fit_seq, rtol=0, atol=1e-5)
        if dtype == torch.float64:
            torch.testing.assert_close(fit_chunk, fit_seq, rtol=0, atol=1e-12)
        assert torch.equal(acc_chunk, acc_seq)


def test_evaluation_is_non_trivial():
    """Guards the test above: the SNN spikes, encoders matter, per-member spikes differ."""
    es, layout, images, labels = _population(torch.float64)
    params = layout.unflatten(es.theta)
    _, records = snn_functional_forward(params, images, TINY, static_input=True)
    for name in TINY.layer_names[:-1]:
        assert 0.02 < float(records[name].mean()) < 0.98, name

    def fitness(encoder, spike_noise, generation=3):
        task = PopulationTask(TINY, layout, encoder, seed=7, spike_noise=spike_noise)
        return evaluate_population("sequential", es, generation, images, labels, task)[0]

    shared = fitness("poisson", "shared")
    per_member = fitness("poisson", "per_member")
    assert (shared - per_member).abs().min() > 1e-6  # every member saw other spikes
    # shared spikes: same draw for everyone in a generation, a new draw next generation
    task = PopulationTask(TINY, layout, "poisson", seed=7, spike_noise="shared")
    assert torch.equal(task.inputs(images, 3, 0), task.inputs(images, 3, 5))
    assert not torch.equal(task.inputs(images, 3, 0), task.inputs(images, 4, 0))
    assert torch.equal(task.inputs(images, 3, 0),
                       encode("poisson", images, TINY.num_steps, generator_from(7, "spikes", 3)))
    task = PopulationTask(TINY, layout, "poisson", seed=7, spike_noise="per_member")
    spikes = [task.inputs(images, 3, member) for member in range(6)]
    for member, x in enumerate(spikes):  # seeded by (seed, "spikes", generation, member)
        expected = encode("poisson", images, TINY.num_steps,
                          generator_from(7, "spikes", 3, member))
        assert torch.equal(x, expected)
        assert all(not torch.equal(x, other) for other in spikes[member + 1:])
    # deterministic encoders ignore spike_noise
    for encoder in ("deterministic", "repeat", "latency"):
        assert torch.equal(fitness(encoder, "shared"), fitness(encoder, "per_member"))
    # the encoders really feed the network different inputs
    by_encoder = [fitness(encoder, "shared") for encoder in ENCODER_NAMES]
    for i in range(len(by_encoder)):
        for j in range(i + 1, len(by_encoder)):
            assert not torch.allclose(by_encoder[i], by_encoder[j])


def test_unknown_mode_and_spike_noise_are_rejected():
    es, layout, images, labels = _population(torch.float32)
    task = PopulationTask(TINY, layout, "repeat", seed=0)
    with pytest.raises(ValueError, match="unknown ES mode 'batched'"):
        evaluate_population("batched", es, 0, images, labels, task)
    with pytest.raises(ValueError, match="spike_noise"):
        PopulationTask(TINY, layout, "poisson", seed=0, spike_noise="independent")


# --------------------------------------------------------------------------------------
# 4. The training trajectory does not depend on the evaluator or the chunk size
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoder", "spike_noise"),
                         [("poisson", "per_member"), ("repeat", "shared")])
def test_trajectory_is_independent_of_mode_and_chunk_size(tmp_path, encoder, spike_noise):
    es = replace(TINY_ES, generations=4, spike_noise=spike_noise)
    results = {}
    for label, mode, chunk in [("chunk2", "chunked", 2), ("chunk4", "chunked", 4),
                               ("sequential", "sequential", 4)]:
        results[label] = run(tmp_path, label, es=es, mode=mode, encoder=encoder,
                             execution=replace(TINY_EXEC, chunk_size=chunk))
    _, ref_rows, ref_theta = results["sequential"]
    assert not torch.equal(ref_theta, initial_theta())  # it trained
    for label in ("chunk2", "chunk4"):
        metrics, rows, theta = results[label]
        assert metrics["finished"]
        # float32 fitness differs by rounding only (~1 ulp); the update uses ranks, so
        # the centre ends up bit-identical (observed); allow 1e-6 in case ranks tie.
        torch.testing.assert_close(theta, ref_theta, rtol=0, atol=1e-6)
        for row, ref in zip(rows, ref_rows, strict=True):
            assert row["test_acc"] == ref["test_acc"]
            assert row["batch_acc"] == ref["batch_acc"]
            assert row["fitness_mean"] == pytest.approx(ref["fitness_mean"], abs=1e-5)
            assert row["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-6)


@pytest.mark.parametrize("encoder", ["repeat", "poisson"])
def test_flip_delta_mode_trains_as_the_chunked_mode_does(tmp_path, encoder, monkeypatch):
    """Mode flip_delta is the chunked evaluator with the second layer from the centre's conv
    plus each member's flipped spikes: the same run up to float32 rounding of the currents."""
    if not flip_delta.available():
        pytest.skip("the flip-delta kernel could not be built here")
    es = replace(TINY_ES, generations=4, rank=1)
    _, ref_rows, ref_theta = run(tmp_path, "chunked", es=es, mode="chunked", encoder=encoder)
    calls = []  # the kernel really computes the second layer (no silent depth-first fallback)
    kernel = flip_delta.member_layer
    monkeypatch.setattr(flip_delta, "member_layer", lambda *a: calls.append(1) or kernel(*a))
    metrics, rows, theta = run(tmp_path, "flip_delta", es=es, mode="flip_delta",
                               encoder=encoder)
    assert len(calls) == es.generations * es.population  # one call per member (one piece)
    with pytest.raises(UserError, match=r"needs low-rank noise \(es.rank > 0\)"):
        run(tmp_path, "flip_delta_dense", es=replace(es, rank=0), mode="flip_delta")
    assert metrics["finished"] and not torch.equal(ref_theta, initial_theta())
    torch.testing.assert_close(theta, ref_theta, rtol=0, atol=1e-6)
    for row, ref in zip(rows, ref_rows, strict=True):
        assert row["batch_acc"] == ref["batch_acc"]
        assert row["fitness_mean"] == pytest.approx(ref["fitness_mean"], abs=1e-5)


@pytest.mark.parametrize("rank", [0, 1])
def test_execution_settings_change_no_result(tmp_path, rank, compiled_kernels):
    """Chunk size, image pieces, the fused (compiled, channels-last) path and the checkpoint
    interval are speed settings: a run gives bit-identical weights, logs and metrics under any of them.
    That is why they are Snakemake resources, not part of a run's spec (no rerun)."""
    es = replace(TINY_ES, generations=4, rank=rank)
    runs = [run(tmp_path, f"exec{i}", es=es, execution=execution) for i, execution in
            enumerate([ExecutionSettings(chunk_size=2, image_chunk=8, fused=False,
                                         checkpoint_every=1),
                       ExecutionSettings(chunk_size=6, image_chunk=3, fused=True,
                                         checkpoint_every=3),
                       ExecutionSettings(chunk_size=4, image_chunk=5, fused=True,
                                         checkpoint_every=2)])]
    ref_metrics, ref_rows, ref_theta = runs[0]
    assert not torch.equal(ref_theta, initial_theta())  # it trained
    for metrics, rows, theta in runs[1:]:
        assert torch.equal(theta, ref_theta)
        assert untimed(rows) == untimed(ref_rows)
        assert {k: v for k, v in metrics.items() if k not in TIMING_KEYS} == \
            {k: v for k, v in ref_metrics.items() if k not in TIMING_KEYS}


# --------------------------------------------------------------------------------------
# 5. Resume after a kill is bit-identical; foreign checkpoints are ignored
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("clean")


@pytest.fixture(scope="module")
def clean_run(clean_folder):
    """The reference: TINY_ES uninterrupted (6 generations, checkpoint every 2)."""
    return run(clean_folder, "clean")


@pytest.mark.parametrize("stop_after", [1, 3, 4, 6])
def test_resume_is_bit_identical(tmp_path, clean_run, stop_after, capsys):
    ref_metrics, ref_rows, ref_theta = clean_run
    assert ref_metrics["finished"] and len(ref_rows) == 6

    metrics, rows, _ = run(tmp_path, "killed", stop_after=stop_after)
    if stop_after < 6:
        assert metrics == {"finished": False, "generations": stop_after}
    else:
        assert metrics["finished"]
    assert (tmp_path / "killed.pt").exists()
    state = load_checkpoint(tmp_path / "killed.pt")
    assert state["generation"] == stop_after - 1
    assert untimed(state["rows"]) == untimed(ref_rows[:stop_after])

    capsys.readouterr()
    metrics, rows, theta = run(tmp_path, "killed")  # same arguments: resumes
    assert f"resuming from {tmp_path / 'killed.pt'} at generation {stop_after}" in \
        capsys.readouterr().out
    assert torch.equal(theta, ref_theta)
    assert untimed(rows) == untimed(ref_rows)
    assert {k: v for k, v in metrics.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in ref_metrics.items() if k not in TIMING_KEYS}


def test_checkpoint_of_other_settings_is_ignored(tmp_path, clean_run, capsys):
    _, ref_rows, ref_theta = clean_run
    # a partial run with a different lr leaves a checkpoint at the same path
    run(tmp_path, "shared", es=replace(TINY_ES, lr=0.1), stop_after=3)
    assert load_checkpoint(tmp_path / "shared.pt")["generation"] == 2
    capsys.readouterr()
    metrics, rows, theta = run(tmp_path, "shared")
    assert "ignoring" in capsys.readouterr().out
    assert metrics["finished"]
    assert torch.equal(theta, ref_theta)
    assert untimed(rows) == untimed(ref_rows)


def test_regular_checkpoints_are_resumable(clean_folder, clean_run, capsys):
    """A checkpoint written by checkpoint_every (not by stop_after) resumes exactly too."""
    _, ref_rows, ref_theta = clean_run
    path = clean_folder / "clean.pt"
    # 6 generations, checkpoint_every=2: written after generations 1 and 3, not after the
    # last one, so the finished reference run leaves its generation-3 checkpoint behind.
    state = load_checkpoint(path)
    assert state["generation"] == 3
    assert untimed(state["rows"]) == untimed(ref_rows[:4])
    capsys.readouterr()
    _, rows, theta = run(clean_folder, "clean")
    assert f"resuming from {path} at generation 4" in capsys.readouterr().out
    assert torch.equal(theta, ref_theta)
    assert untimed(rows) == untimed(ref_rows)


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_starts_over(tmp_path, clean_run,
                                                                    damage, capsys):
    _, ref_rows, ref_theta = clean_run
    run(tmp_path, "hurt", stop_after=3)
    path = tmp_path / "hurt.pt"
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:  # the same size, 200 random bytes in the middle of the payload
        middle = len(good) // 2
        noise = bytes(torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).tolist())
        path.write_bytes(good[:middle] + noise + good[middle + 200:])
    damaged = path.read_bytes()
    with pytest.raises(DamagedFileError, match="is damaged: its payload"):
        load_checkpoint(path)
    capsys.readouterr()
    metrics, rows, theta = run(tmp_path, "hurt")
    out = capsys.readouterr().out
    aside = tmp_path / "hurt.pt.corrupt"
    assert f"{path} is damaged: its payload" in out
    assert f"moved it to {aside} and started this run over from generation 0" in out
    assert "resuming" not in out
    assert aside.read_bytes() == damaged  # kept for inspection, never resumed
    assert metrics["finished"] and torch.equal(theta, ref_theta)
    assert untimed(rows) == untimed(ref_rows)


# --------------------------------------------------------------------------------------
# 6. Divergence: non-finite fitness raises, the last good checkpoint is kept
# --------------------------------------------------------------------------------------


def test_divergence_at_the_first_generation_writes_no_checkpoint(tmp_path):
    # sigma = 1e38: members overflow float32 (inf weights, inf * 0 = NaN) at generation 0
    with pytest.raises(ESDivergedError, match=r"generation 0: 6 of 6 members .*NaN") as info:
        run(tmp_path, "blowup", es=replace(TINY_ES, sigma=1e38),
            execution=replace(TINY_EXEC, checkpoint_every=1))
    assert "No checkpoint" in str(info.value)
    assert str(tmp_path / "blowup.pt") in str(info.value)
    assert not (tmp_path / "blowup.pt").exists()
    assert isinstance(info.value, RuntimeError)


def test_later_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # lr ramps linearly from 1e-3 to 1e38 over 6 generations: generations 0 and 1 are
    # fine, the update after generation 1 (lr 2e37) makes generation 2 overflow.
    es = replace(TINY_ES, lr=1e-3, lr_schedule="linear", lr_final_ratio=1e41)
    path = tmp_path / "diverges.pt"
    with pytest.raises(ESDivergedError, match=r"^generation 2: .*NaN/inf") as info:
        run(tmp_path, "diverges", es=es)  # checkpoint_every=2 -> written after gen 1
    message = str(info.value)
    assert f"last good checkpoint ({path}, generation 1, checksum verified) is kept" in message
    assert path.exists()
    state = load_checkpoint(path)
    assert state["generation"] == 1
    assert [row["generation"] for row in state["rows"]] == [0, 1]
    theta = state["strategy"]["theta"]
    assert torch.isfinite(theta).all()

    # the checkpoint is what a clean run reaches after two generations ...
    _, _, twin_theta = run(tmp_path, "twin", es=es, stop_after=2)
    assert torch.equal(theta, twin_theta)
    # ... and resuming from it diverges again, at the same generation, keeping it
    capsys.readouterr()
    with pytest.raises(ESDivergedError, match=r"^generation 2: ") as again:
        run(tmp_path, "diverges", es=es)
    assert "resuming" in capsys.readouterr().out
    assert str(again.value) == message
    assert torch.equal(load_checkpoint(path)["strategy"]["theta"], theta)


# --------------------------------------------------------------------------------------
# 7. Determinism across seeds
# --------------------------------------------------------------------------------------


def test_same_seed_same_run_different_seed_different_run(tmp_path, clean_run):
    ref_metrics, ref_rows, ref_theta = clean_run
    metrics, rows, theta = run(tmp_path, "again")
    assert torch.equal(theta, ref_theta)
    assert untimed(rows) == untimed(ref_rows)
    assert metrics["final_train_acc"] == ref_metrics["final_train_acc"]

    _, other_rows, other_theta = run(tmp_path, "other", seed=1)
    assert theta.shape == other_theta.shape
    assert not torch.allclose(other_theta, ref_theta)
    assert [r["fitness_mean"] for r in other_rows] != [r["fitness_mean"] for r in ref_rows]


def test_flip_augmentation_mirrors_a_seeded_half_of_each_minibatch():
    images = tiny_subset(num_train=256)["train_images"].float()
    assert augment_images(images, "none", 0, "augment", 3) is images
    flipped = augment_images(images, "flip", 0, "augment", 3)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    kept = (flipped == images).flatten(1).all(1)
    assert bool((mirrored | kept).all())  # every image is itself or its mirror image
    assert 96 < int((mirrored & ~kept).sum()) < 160  # about half of them (p = 1/2)
    assert torch.equal(augment_images(images, "flip", 0, "augment", 3), flipped)  # seeded
    assert not torch.equal(augment_images(images, "flip", 0, "augment", 4), flipped)
    with pytest.raises(ValueError, match="augment must be none, flip or flip_translate"):
        augment_images(images, "rotate", 0)


def test_flip_translate_mirrors_as_flip_then_shifts_each_image_by_at_most_two_pixels():
    images = tiny_subset(num_train=64)["train_images"].float()
    flipped = augment_images(images, "flip", 0, "augment", 3)
    moved = augment_images(images, "flip_translate", 0, "augment", 3)
    assert moved.shape == images.shape
    assert torch.equal(augment_images(images, "flip_translate", 0, "augment", 3), moved)
    assert not torch.equal(augment_images(images, "flip_translate", 0, "augment", 4), moved)
    # every image is its `flip` image shifted by some (dy, dx) in [-2, 2]^2, borders filled
    # by reflection, and the shifts vary from image to image
    padded = torch.nn.functional.pad(flipped, (2,) * 4, mode="reflect")
    height, width = images.shape[-2:]
    shifts = []
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(padded[i, :, dy:dy + height, dx:dx + width], moved[i])]
        assert found, f"image {i} is not a shift of its flip by at most 2 pixels"
        shifts.append(found[0])
    assert len(set(shifts)) > 10  # 25 possible shifts, drawn per image


def test_flip_augmentation_changes_the_run_and_stays_reproducible(tmp_path, clean_run):
    subset = tiny_subset()
    plain, _ = es_minibatch(subset["train_images"], subset["train_labels"], 0, 2, 8)
    flipped, _ = es_minibatch(subset["train_images"], subset["train_labels"], 0, 2, 8,
                              augment="flip")
    assert torch.equal(flipped, augment_images(plain, "flip", 0, "augment", 2))
    es = replace(TINY_ES, augment="flip")
    _, rows, theta = run(tmp_path, "flip", es=es)
    _, again_rows, again_theta = run(tmp_path, "flip_again", es=es)
    assert torch.equal(theta, again_theta) and untimed(rows) == untimed(again_rows)
    assert not torch.equal(theta, clean_run[2])  # the same run without flips


# --------------------------------------------------------------------------------------
# 8. ES learns a tiny MNIST-shaped task
# --------------------------------------------------------------------------------------


def mnist_like(num: int, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes of 1x28x28 uint8 images: a bright bar at a class-specific place + noise."""
    prototypes = torch.zeros(10, 1, 28, 28)
    for c in range(10):
        row, col = divmod(c, 5)
        prototypes[c, 0, 2 + 12 * row: 12 + 12 * row, 5 * col + 1: 5 * col + 5] = 1.0
    gen = generator_from(0, "mnist-like", key)
    labels = (torch.arange(num) % 10)[torch.randperm(num, generator=gen)]
    images = prototypes[labels] * 0.8 + torch.rand(num, 1, 28, 28, generator=gen) * 0.3
    return (images.clamp(0, 1) * 255).to(torch.uint8), labels


# The tiny MNIST-shaped task: 320 training / 200 test images, and an SNN for its shape.
MNIST_LIKE_CFG = SNNSettings(input_shape=(1, 28, 28), channels=(4, 8), num_steps=4)


def mnist_like_subset() -> dict[str, torch.Tensor]:
    train_x, train_y = mnist_like(320, "train")
    test_x, test_y = mnist_like(200, "test")
    return {"train_images": train_x, "train_labels": train_y,
            "test_images": test_x, "test_labels": test_y}


def test_es_beats_chance_on_a_tiny_mnist_shaped_task(tmp_path):
    subset, cfg = mnist_like_subset(), MNIST_LIKE_CFG
    es = ES(population=16, sigma=0.05, lr=0.03, generations=60, batch_size=32, eval_every=10)
    metrics, rows, _ = run_es(subset, cfg, es, "repeat", 0, "chunked", tmp_path / "mnist.pt",
                              ExecutionSettings(chunk_size=16, checkpoint_every=100),
                              progress=False)
    assert metrics["finished"]
    tested = [row["test_acc"] for row in rows if row["test_acc"] is not None]
    assert tested[0] < 0.3  # starts near chance ...
    # ... observed: test accuracy 0.145 -> 0.895, train 0.884, fitness -2.32 -> -0.77
    assert metrics["final_test_acc"] >= 0.5
    assert metrics["final_train_acc"] >= 0.5
    assert rows[-1]["fitness_mean"] > rows[0]["fitness_mean"] + 0.2


# --------------------------------------------------------------------------------------
# Low-rank (EGGROLL-style) perturbations
# --------------------------------------------------------------------------------------


def _low_rank_population(rank: int, dtype=torch.float64):
    model = make_snn(TINY, 0).to(dtype)
    layout = ParamLayout.of(model)
    theta = layout.flatten(dict(model.named_parameters())) * 2.0
    es = make_es(theta, ES(population=6, sigma=0.1, rank=rank), seed=1, generations=10,
                 shapes=layout.shapes)
    images = torch.rand(8, *TINY.input_shape, generator=generator_from(5), dtype=dtype)
    return es, layout, images, torch.arange(8) % 10


def test_low_rank_noise_has_the_stated_rank_and_scale():
    es, layout, _, _ = _low_rank_population(rank=2)
    eps = layout.unflatten(es.noise(0, 0))
    for name, shape in zip(layout.names, layout.shapes):
        if len(shape) >= 2:
            assert torch.linalg.matrix_rank(eps[name].reshape(shape[0], -1)) == 2, name
        else:
            assert torch.linalg.matrix_rank(eps[name][None]) == 1
    # entries have unit variance, like full-rank noise (averaged over many pairs)
    draws = torch.stack([es.noise(0, pair) for pair in range(40)])
    assert 0.9 < float(draws.var()) < 1.1
    # counter-based: the same pair always gives the same noise, another pair other noise
    fresh, _, _, _ = _low_rank_population(rank=2)
    assert torch.equal(fresh.noise(0, 0), es.noise(0, 0))
    assert not torch.equal(es.noise(0, 1), es.noise(0, 0))
    with pytest.raises(ValueError, match="parameter shapes"):
        make_es(es.theta, ES(population=4, rank=1), seed=0, generations=1)


@pytest.mark.parametrize("order", ["depth_first", "layer_major", "flip_delta"])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("encoder", "spike_noise"),
                         [("poisson", "shared"), ("poisson", "per_member"), ("repeat", "shared"),
                          ("deterministic", "shared")])
def test_low_rank_chunked_forward_matches_materialised_members(encoder, spike_noise, fused,
                                                               order, monkeypatch):
    """The shared-W-plus-correction forward equals the sequential evaluator, which builds
    each member's dense weights (theta + sigma * A @ B.T / sqrt(r)), in either layout:
    depth-first (the CPU's), layer-major (EGGROLL's every-layer shared base, the GPU's) and
    flip-delta (the centre's second-layer conv plus each member's flipped spikes)."""
    if order == "flip_delta" and not flip_delta.available():
        pytest.skip("the flip-delta kernel could not be built here")
    if fused and encoder == "poisson" and spike_noise == "shared":
        monkeypatch.setenv("SNN_ES_COMPILE", "1")  # one case through torch.compile
    es, layout, images, labels = _low_rank_population(rank=2)
    task = PopulationTask(TINY, layout, encoder, seed=7, spike_noise=spike_noise, fused=fused)
    fit_seq, acc_seq = evaluate_population("sequential", es, 3, images, labels, task)
    assert len(set(fit_seq.tolist())) == 6
    for chunk in (1, 4, 6):
        fit, acc = evaluate_population("chunked", es, 3, images, labels, task, chunk_size=chunk,
                                       layout=order)
        torch.testing.assert_close(fit, fit_seq, rtol=0, atol=1e-10)
        assert torch.equal(acc, acc_seq)


def test_layer_scaled_noise_is_relative_to_each_tensors_initial_std():
    model = make_snn(TINY, 0)
    layout = ParamLayout.of(model)
    theta = layout.flatten(dict(model.named_parameters()))
    settings = ES(population=4, sigma=0.1, noise_scale="layer")
    es = make_es(theta, settings, seed=1, generations=3, shapes=layout.shapes)
    plain = make_es(theta, ES(population=4, sigma=0.1), seed=1, generations=3)
    initial = layout.unflatten(theta)
    delta = layout.unflatten(es.member(0, 0) - theta)
    plain_delta = layout.unflatten(plain.member(0, 0) - theta)
    for name in layout.names:  # same noise, multiplied by the tensor's initial std
        torch.testing.assert_close(delta[name], plain_delta[name] * initial[name].std())
    # the update is scaled the same way: sgd without momentum moves theta by lr * s_k * g
    sgd = ES(population=4, sigma=0.1, noise_scale="layer", optimizer="sgd",
                     momentum=0.0, lr=0.5)
    es = make_es(theta, sgd, seed=1, generations=3, shapes=layout.shapes)
    fitness = torch.tensor([1.0, 0.0, 0.5, 2.0])
    grad = es.gradient(0, fitness)
    es.tell(0, fitness)
    torch.testing.assert_close(es.theta, theta + 0.5 * grad * es.scale)
    with pytest.raises(ValueError, match="parameter shapes"):
        make_es(theta, settings, seed=1, generations=3)


def test_layer_scaled_low_rank_chunks_match_the_sequential_evaluator():
    model = make_snn(TINY, 0).double()
    layout = ParamLayout.of(model)
    theta = layout.flatten(dict(model.named_parameters())) * 2.0
    es = make_es(theta, ES(population=4, sigma=0.5, rank=2, noise_scale="layer"),
                  seed=1, generations=3, shapes=layout.shapes)
    images = torch.rand(8, *TINY.input_shape, generator=generator_from(5), dtype=torch.float64)
    labels = torch.arange(8) % 10
    task = PopulationTask(TINY, layout, "poisson", seed=7)
    fit_seq, _ = evaluate_population("sequential", es, 1, images, labels, task)
    fit, _ = evaluate_population("chunked", es, 1, images, labels, task, chunk_size=4)
    torch.testing.assert_close(fit, fit_seq, rtol=0, atol=1e-10)
    assert len(set(fit_seq.tolist())) == 4


# --------------------------------------------------------------------------------------
# 7. Adaptive per-parameter sigma (SNES-style, sigma_lr > 0)
# --------------------------------------------------------------------------------------


def test_adaptive_sigma_follows_the_snes_update():
    """log sigma_i += sigma_lr / 2 * sum_m u_m (eps_mi^2 - 1), u = centred ranks * 4 / P;
    members and the next generation's perturbations use the adapted sigma."""
    settings = ES(population=6, sigma=0.2, sigma_lr=0.3, optimizer="sgd", momentum=0.0, lr=0.1)
    theta = torch.linspace(-1, 1, 9, dtype=torch.float64)
    es = make_es(theta, settings, seed=4, generations=3)
    assert torch.equal(es.member(0, 0), theta + 0.2 * es.noise(0, 0))  # starts at sigma
    fitness = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.2, 1.5])
    ranks = centered_ranks(fitness) * 4 / 6
    expected_log = sum(ranks[m] * (es.noise(0, m // 2) ** 2 - 1) for m in range(6)) * 0.15
    grad = es.gradient(0, fitness)
    es.tell(0, fitness)
    torch.testing.assert_close(es.log_sigma, expected_log, rtol=0, atol=1e-15)
    torch.testing.assert_close(es.theta, theta + 0.1 * grad)  # step at the old scale (1)
    adapted = expected_log.exp()
    torch.testing.assert_close(es.member(1, 1), es.theta - 0.2 * adapted * es.noise(1, 0))
    # the next step is scaled by the adapted sigma, like SNES's sigma * sum u z
    before = es.theta.clone()
    grad = es.gradient(1, fitness)
    es.tell(1, fitness)
    torch.testing.assert_close(es.theta, before + 0.1 * grad * adapted)


def test_adaptive_sigma_grows_along_a_rewarding_coordinate_and_shrinks_elsewhere():
    # fitness rewards the size of coordinate 0 and penalises the others': sigma_0 grows, the
    # others shrink
    settings = ES(population=32, sigma=0.1, sigma_lr=0.2, lr=1e-6)
    es = make_es(torch.zeros(8, dtype=torch.float64), settings, seed=5, generations=40)
    for generation in range(40):
        population = es.members(generation, 0, 32)
        es.tell(generation, population[:, 0].abs() - population[:, 1:].abs().sum(1))
    assert float(es.log_sigma[0]) > 0.5
    assert float(es.log_sigma[1:].max()) < -0.2


def test_adaptive_sigma_is_checkpointed_and_needs_full_rank_noise(tmp_path):
    es = replace(TINY_ES, sigma_lr=0.5)
    clean = run(tmp_path, "clean-adaptive", es=es)
    run(tmp_path, "killed-adaptive", es=es, stop_after=3)
    resumed = run(tmp_path, "killed-adaptive", es=es)
    assert torch.equal(resumed[2], clean[2])
    assert untimed(resumed[1]) == untimed(clean[1])
    plain = run(tmp_path, "plain", es=TINY_ES)
    assert not torch.equal(plain[2], clean[2])  # the adaptation changed the run
    sequential = run(tmp_path, "sequential-adaptive", es=es, mode="sequential")
    torch.testing.assert_close(sequential[2], clean[2], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs full-rank noise: set rank: 0"):
        ESSettings(sigma_lr=0.1, rank=1)
    with pytest.raises(ValueError, match="sigma_lr must be >= 0"):
        ESSettings(sigma_lr=-0.1, rank=0)


def test_initial_weights_scale_the_convs_and_the_readout_only():
    from snn_es.es.run import initial_theta as run_initial_theta

    plain, layout = run_initial_theta(TINY, ESSettings(init_conv_scale=1.0), 3)
    scaled, _ = run_initial_theta(TINY, ESSettings(init_conv_scale=2.0, init_readout_scale=0.5),
                                  3)
    for name, p, s in zip(layout.names, layout.unflatten(plain).values(),
                          layout.unflatten(scaled).values(), strict=True):
        factor = 2.0 if name.startswith("conv") else 0.5
        torch.testing.assert_close(s, p * factor, rtol=0, atol=0)
    with pytest.raises(ValueError, match="init_conv_scale must be positive"):
        ESSettings(init_conv_scale=0.0)
