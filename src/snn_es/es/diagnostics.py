"""ES gradient diagnostics: how good is the ES gradient estimate at fixed parameters?

At the ES runs' starting point (the weights ``run_es`` initialises from ``(seed, "init")``)
and on a fixed minibatch, for every (rank, sigma, population) setting this module draws
``estimates`` = K independent ES gradient estimates and compares them with the surrogate
gradient (BPTT) of the same network, and measures how noisy the fitness itself is.

What is held fixed, and why
---------------------------
* **Minibatch and spikes.** All K estimates of every setting score their members on the
  same B images: the minibatch ES generation 0 of a run with this seed draws
  (``generator_from(seed, "batch", 0)``), encoded once with generation 0's spikes
  (``(seed, "spikes", 0)``, shared by all members as with ``spike_noise: shared``). The
  spread between the K estimates is therefore the ES *sampling* noise alone (which
  perturbations were drawn), not minibatch or spike noise. Those are reported separately
  (``fitness_noise``).
* **Independent estimates.** Estimate k uses the strategy's counter-based noise of
  generation k, so estimate 0 is exactly the first gradient a real ES run with this seed,
  sigma and population computes (when its batch size is the same).
* **Nested populations.** Member i of generation k does not depend on the population size,
  so the first P members of the largest population *are* the members of a population of P.
  Each (rank, sigma, k) therefore evaluates the largest population once and every smaller
  P reuses the first P fitness values (checked member by member; a strategy whose members
  do depend on P is evaluated separately). Estimates of different P at the same k share
  their first members; estimates of the same P are independent.

The reference gradients
-----------------------
``bptt_gradient`` is the gradient of the mean cross-entropy through the surrogate spike
function (the gradient BPTT training follows), negated so that, like the ES estimate, it is
an ascent direction of the fitness ``-CE``. Two versions are used: on the ES minibatch with
the same spikes (``g_batch``: the same objective the ES estimates target, apart from ES's
Gaussian smoothing and rank shaping and the surrogate's relaxation of the threshold), and on
a larger reference batch of R training images (``g_ref``: the "true" descent direction;
poisson inputs use one fixed spike sample per image, seeded by
``(seed, "diag-reference")``, rather than an average over samples: with R images the
spike noise already averages out over images and costs no extra backward passes).

Every random draw is seeded explicitly through ``snn_es.seeding``, so the diagnostics are
deterministic for a given seed (apart from ``wall_s``).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from snn_es.encoders import to_float
from snn_es.errors import UserError
from snn_es.es.evaluate import PopulationTask
from snn_es.es.params import ParamLayout
from snn_es.es.run import es_minibatch, initial_theta
from snn_es.es.strategy import OpenAIES
from snn_es.settings import ESSettings, SNNSettings
from snn_es.seeding import generator_from, seed_from

# The columns of the per-job CSV and of results/tables/es_diagnostics.csv, in order.
# workflow/report/es_diagnostics.rst defines each of them.
COLUMNS = (
    "dataset", "encoder", "subset", "point", "seed", "num_params", "batch_size",
    "rank", "sigma", "population", "estimates",
    "cosine_bptt_mean", "cosine_bptt_std", "cosine_bptt_of_mean", "cosine_ref_mean",
    "cosine_linear_mean", "pairwise_cosine", "snr", "snr_debiased", "snr_noise_floor",
    "es_grad_norm",
    "member_fitness_std", "pair_half_diff_rms", "pair_half_diff_linear_rms",
    "half_diff_bptt_corr",
    "fitness_center", "fitness_std_minibatch", "fitness_std_spikes", "noise_samples",
    "bptt_batch_ref_cosine", "bptt_grad_norm", "reference_batch",
    "member_evals", "wall_s",
)


class DiagnosticsError(UserError, ValueError):
    """Diagnostics settings that cannot be run (e.g. a batch larger than the subset)."""


@dataclass(frozen=True)
class DiagnosticSettings:
    """What to sweep and how many samples to take (config section ``diagnostics``)."""

    sigmas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
    populations: tuple[int, ...] = (8, 32, 64)  # even; nested (see the module docstring)
    ranks: tuple[int, ...] = (0,)  # 0 = full-rank Gaussian noise; r > 0 = ESSettings.rank
    estimates: int = 4  # K independent ES estimates per setting
    batch_size: int = 32  # B: the ES minibatch
    reference_batch: int = 512  # R: training images of the reference BPTT gradient
    noise_samples: int = 8  # M: minibatches / spike samples of the fitness-noise estimates
    grad_chunk: int = 128  # images per backward pass of the reference gradient

    def __post_init__(self) -> None:
        for name in ("sigmas", "populations", "ranks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ValueError(f"DiagnosticSettings.{name} must not be empty")
        if any(s <= 0 for s in self.sigmas):
            raise ValueError("DiagnosticSettings.sigmas must be positive")
        if any(p < 2 or p % 2 for p in self.populations):
            raise ValueError("DiagnosticSettings.populations must be even numbers >= 2")
        if any(r < 0 for r in self.ranks):
            raise ValueError("DiagnosticSettings.ranks must be >= 0")
        if self.estimates < 2:
            raise ValueError("DiagnosticSettings.estimates must be >= 2 (spread needs two)")
        if self.noise_samples < 2:
            raise ValueError("DiagnosticSettings.noise_samples must be >= 2")
        if min(self.batch_size, self.reference_batch, self.grad_chunk) < 1:
            raise ValueError("DiagnosticSettings batch sizes must be >= 1")

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> DiagnosticSettings:
        """The settings named in a config section; other keys (datasets...) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})


# --------------------------------------------------------------------------------------
# Vector statistics
# --------------------------------------------------------------------------------------


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two flat vectors (in float64; 0 if either is zero)."""
    a, b = a.double().flatten(), b.double().flatten()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else 0.0


def mean_pairwise_cosine(estimates: Sequence[Tensor]) -> float:
    """Mean cosine over all pairs of distinct estimates (their mutual consistency)."""
    pairs = [cosine(a, b) for i, a in enumerate(estimates) for b in estimates[i + 1:]]
    return sum(pairs) / len(pairs)


def snr(estimates: Sequence[Tensor]) -> float:
    """``||mean_k g_k|| / sqrt(mean_k ||g_k - mean g||^2)`` over K estimates g_k.

    Biased upwards: for pure noise (mean zero) it is about ``1 / sqrt(K - 1)``, because the
    mean of K noisy estimates keeps ``1 / K`` of their noise. See ``snr_debiased``.
    """
    g = torch.stack([e.double().flatten() for e in estimates])
    mean = g.mean(0)
    spread = float(((g - mean) ** 2).sum(1).mean())
    return float(mean.norm()) / math.sqrt(spread) if spread > 0 else math.inf


def snr_debiased(estimates: Sequence[Tensor]) -> float:
    """Per-estimate SNR ``||E g|| / sqrt(E ||g - E g||^2)``, estimated without bias terms.

    With ``s2 = sum_k ||g_k - mean g||^2 / (K - 1)`` (unbiased for the total variance of one
    estimate) and ``||mean g||^2 - s2 / K`` (unbiased for ``||E g||^2``, clipped at 0), the
    result is ``sqrt(max(||mean g||^2 - s2 / K, 0) / s2)``: 0 for pure noise, whatever K.
    """
    g = torch.stack([e.double().flatten() for e in estimates])
    k = g.shape[0]
    mean = g.mean(0)
    s2 = float(((g - mean) ** 2).sum(1).sum()) / (k - 1)
    if s2 <= 0:
        return math.inf
    return math.sqrt(max(float(mean @ mean) - s2 / k, 0.0) / s2)


def snr_noise_floor(dim: int, k: int) -> float:
    """The smallest per-estimate SNR that ``snr_debiased`` resolves from K estimates.

    For pure noise in ``dim`` dimensions, the K(K-1)/2 pairwise cosines of the estimates
    have mean 0 and std ``1 / sqrt(dim)``, so the estimate of SNR^2 (their mean, in
    effect) has std ``(dim * K(K-1)/2) ** -0.5``; its square root is returned. Values of
    ``snr_debiased`` near or below it are not distinguishable from zero.
    """
    return (dim * k * (k - 1) / 2) ** -0.25


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof = 1)."""
    return float(torch.tensor(values, dtype=torch.float64).std())


# --------------------------------------------------------------------------------------
# Parameters, batches, gradients, fitness
# --------------------------------------------------------------------------------------


def bptt_gradient(theta: Tensor, task: PopulationTask, inputs: Tensor, labels: Tensor) -> Tensor:
    """Surrogate (BPTT) gradient of the fitness ``-mean CE`` at the flat ``theta``.

    ``inputs`` is what ``task.score`` reads (an encoded sequence, or the image for the
    ``repeat`` encoder). Returns ``-d CE / d theta`` (an ascent direction, like the ES
    estimate), with ``theta``'s shape and dtype.
    """
    with torch.enable_grad():
        flat = theta.detach().clone().requires_grad_(True)
        fitness, _ = task.score(task.layout.unflatten(flat), inputs, labels)
        (grad,) = torch.autograd.grad(fitness, flat)
    return grad.detach()


def reference_gradient(theta: Tensor, task: PopulationTask, images: Tensor, labels: Tensor,
                       seed: int, chunk: int = 128) -> Tensor:
    """``bptt_gradient`` of the mean CE over all ``images`` [R, C, H, W] (floats), in chunks.

    Stochastic encoders draw one spike sample per chunk from ``(seed, "diag-reference")``.
    """
    spikes = PopulationTask(task.cfg, task.layout, task.encoder, seed_from(seed, "diag-reference"))
    total = torch.zeros_like(theta)
    for i, start in enumerate(range(0, len(labels), chunk)):
        x, y = images[start:start + chunk], labels[start:start + chunk]
        total += bptt_gradient(theta, task, spikes.inputs(x, i, None), y) * len(y)
    return total / len(labels)


@torch.no_grad()
def fitness_of(theta: Tensor, task: PopulationTask, inputs: Tensor, labels: Tensor) -> float:
    fitness, _ = task.score(task.layout.unflatten(theta), inputs, labels)
    return float(fitness)


@torch.no_grad()
def evaluate_members(strategy: OpenAIES, generation: int, population: int, task: PopulationTask,
                     inputs: Tensor, labels: Tensor) -> tuple[Tensor, list[float]]:
    """Fitness of members ``0..population-1`` on fixed inputs, one member at a time.

    Returns (fitness [population] float64, cumulative seconds after each member), so the
    cost of the first P members of a nested population can be read off.
    """
    fitness, elapsed, tick = [], [], time.perf_counter()
    for member in range(population):
        params = task.layout.unflatten(strategy.member(generation, member))
        f, _ = task.score(params, inputs, labels)
        fitness.append(float(f))
        elapsed.append(time.perf_counter() - tick)
    return torch.tensor(fitness, dtype=torch.float64), elapsed


def fitness_noise(theta: Tensor, task: PopulationTask, train_images: Tensor, train_labels: Tensor,
                  seed: int, batch_size: int, samples: int) -> dict[str, float]:
    """How much ``f(theta)`` moves between evaluations that ES treats as equivalent.

    * ``fitness_std_minibatch``: std over the ES minibatches of generations 0..M-1, each
      with its generation's spikes (what the centre's fitness does from one generation to
      the next if theta stood still; for poisson it includes the spike noise).
    * ``fitness_std_spikes``: std over the spikes of generations 0..M-1 on generation 0's
      minibatch (exactly 0 for deterministic encoders).
    * ``fitness_center``: the fitness on the fixed minibatch and spikes of the ES estimates.
    """
    dtype = theta.dtype
    per_batch = []
    for generation in range(samples):
        images, labels = es_minibatch(train_images, train_labels, seed, generation, batch_size,
                                      dtype)
        per_batch.append(fitness_of(theta, task, task.inputs(images, generation, None), labels))
    images, labels = es_minibatch(train_images, train_labels, seed, 0, batch_size, dtype)
    per_spikes = [fitness_of(theta, task, task.inputs(images, generation, None), labels)
                  for generation in range(samples)]
    return {
        "fitness_center": per_spikes[0],
        "fitness_std_minibatch": _std(per_batch),
        "fitness_std_spikes": _std(per_spikes),
    }


def make_strategy(theta: Tensor, layout: ParamLayout, es: ESSettings, population: int,
                  sigma: float, rank: int, seed: int, generations: int) -> OpenAIES:
    """The ``OpenAIES`` of one diagnosed setting: the run's ``es`` with population, sigma,
    rank and generations (= estimates) swept."""
    settings = replace(es, population=population, sigma=sigma, sigma_final=None, rank=rank,
                       generations=generations)
    return OpenAIES(theta, settings, seed, shapes=layout.shapes)


# --------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------


def _half_diffs(fitness: list[Tensor]) -> Tensor:
    """``(f(theta + sigma eps) - f(theta - sigma eps)) / 2`` of every antithetic pair."""
    return torch.cat([(f[0::2] - f[1::2]) / 2 for f in fitness])


def _setting_row(estimates: list[Tensor], fitness: list[Tensor], linear_fitness: list[Tensor],
                 linear_estimates: list[Tensor], g_batch: Tensor,
                 g_ref: Tensor) -> dict[str, float]:
    """The statistics of one setting's K estimates, their member fitness and the same
    estimator applied to the linear fitness ``<g_batch, theta>`` on the same members."""
    cosines = [cosine(g, g_batch) for g in estimates]
    mean = torch.stack(estimates).mean(0)
    half, half_linear = _half_diffs(fitness), _half_diffs(linear_fitness)
    return {
        "cosine_bptt_mean": sum(cosines) / len(cosines),
        "cosine_bptt_std": _std(cosines),
        "cosine_bptt_of_mean": cosine(mean, g_batch),
        "cosine_ref_mean": sum(cosine(g, g_ref) for g in estimates) / len(estimates),
        "cosine_linear_mean": sum(cosine(g, g_batch) for g in linear_estimates)
        / len(linear_estimates),
        "pairwise_cosine": mean_pairwise_cosine(estimates),
        "snr": snr(estimates),
        "snr_debiased": snr_debiased(estimates),
        "snr_noise_floor": snr_noise_floor(mean.numel(), len(estimates)),
        "es_grad_norm": sum(float(g.norm()) for g in estimates) / len(estimates),
        "member_fitness_std": sum(float(f.std()) for f in fitness) / len(fitness),
        "pair_half_diff_rms": float(half.pow(2).mean().sqrt()),
        "pair_half_diff_linear_rms": float(half_linear.pow(2).mean().sqrt()),
        "half_diff_bptt_corr": cosine(half - half.mean(), half_linear - half_linear.mean()),
    }


def diagnose(
    subset: dict[str, Tensor],
    cfg: SNNSettings,
    encoder: str,
    seed: int,
    settings: DiagnosticSettings,
    es: ESSettings = ESSettings(),
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Diagnose the ES gradient at the ES runs' initial weights. One dict per setting.

    Keys are ``COLUMNS`` minus the identifying ``dataset`` / ``subset`` (the caller's).
    ``wall_s`` is the only entry that is not a deterministic function of the arguments.
    """
    train_x, train_y = subset["train_images"], subset["train_labels"]
    s = settings
    if s.batch_size > len(train_y) or s.reference_batch > len(train_y):
        raise DiagnosticsError(
            f"diagnostics: batch_size {s.batch_size} and reference_batch {s.reference_batch} "
            f"must not exceed the subset's {len(train_y)} training images")
    theta, layout = initial_theta(cfg, es, seed)
    theta = theta.to(dtype)
    task = PopulationTask(cfg, layout, encoder, seed, es.spike_noise, fitness=es.fitness)
    say = log or (lambda _: None)

    # Fixed minibatch and spikes: those of ES generation 0.
    images, labels = es_minibatch(train_x, train_y, seed, 0, s.batch_size, dtype)
    inputs = task.inputs(images, 0, None)
    tick = time.perf_counter()
    g_batch = bptt_gradient(theta, task, inputs, labels)
    order = torch.randperm(len(train_y), generator=generator_from(seed, "diag-reference"))
    ref = order[: s.reference_batch]
    g_ref = reference_gradient(theta, task, to_float(train_x[ref]).to(dtype), train_y[ref], seed,
                               s.grad_chunk)
    noise = fitness_noise(theta, task, train_x, train_y, seed, s.batch_size, s.noise_samples)
    say(f"reference gradients and fitness noise: {time.perf_counter() - tick:.1f}s; "
        f"|g_batch| {float(g_batch.norm()):.4g}, |g_ref| {float(g_ref.norm()):.4g}, "
        f"cos(g_batch, g_ref) {cosine(g_batch, g_ref):.4f}; {noise}")
    common = {
        "encoder": encoder, "point": "init", "seed": seed, "num_params": layout.size,
        "batch_size": s.batch_size, "estimates": s.estimates, **noise,
        "noise_samples": s.noise_samples,
        "bptt_batch_ref_cosine": cosine(g_batch, g_ref),
        "bptt_grad_norm": float(g_batch.norm()),
        "reference_batch": s.reference_batch,
    }

    populations = sorted(set(s.populations))
    rows = []
    for rank in s.ranks:
        for sigma in s.sigmas:
            strategies = {p: make_strategy(theta, layout, es, p, sigma, rank, seed, s.estimates)
                          for p in populations}
            largest = strategies[populations[-1]]
            found: dict[int, dict[str, list]] = {
                p: {"estimates": [], "fitness": [], "linear_fitness": [], "linear_estimates": [],
                    "seconds": []}
                for p in populations}
            tick = time.perf_counter()
            for k in range(s.estimates):
                fitness, elapsed = evaluate_members(largest, k, populations[-1], task, inputs,
                                                    labels)
                for p, strategy in strategies.items():
                    members = strategy.members(k, 0, p)
                    if torch.equal(members, largest.members(k, 0, p)):
                        f, seconds = fitness[:p], elapsed[p - 1]
                    else:  # members depend on the population size: no reuse
                        f, times = evaluate_members(strategy, k, p, task, inputs, labels)
                        seconds = times[-1]
                    start = time.perf_counter()
                    found[p]["estimates"].append(strategy.gradient(k, f))
                    found[p]["seconds"].append(seconds + time.perf_counter() - start)
                    found[p]["fitness"].append(f)
                    # The same estimator on the exactly linear fitness <g_batch, theta>.
                    linear = members.double() @ g_batch.double()
                    found[p]["linear_fitness"].append(linear)
                    found[p]["linear_estimates"].append(strategy.gradient(k, linear))
            say(f"rank {rank} sigma {sigma}: {s.estimates} x {populations[-1]} members in "
                f"{time.perf_counter() - tick:.1f}s")
            for p in populations:
                got = found[p]
                rows.append({
                    **common, "rank": rank, "sigma": sigma, "population": p,
                    **_setting_row(got["estimates"], got["fitness"], got["linear_fitness"],
                                   got["linear_estimates"], g_batch, g_ref),
                    "member_evals": p * s.estimates,
                    "wall_s": round(sum(got["seconds"]), 3),
                })
                say(" ".join(f"{k}={rows[-1][k]:.4g}" for k in (
                    "population", "cosine_bptt_mean", "cosine_linear_mean", "snr",
                    "snr_debiased", "member_fitness_std", "pair_half_diff_rms",
                    "pair_half_diff_linear_rms", "half_diff_bptt_corr")))
    return rows


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV text with the ``COLUMNS`` header (full float precision)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    return buffer.getvalue()
