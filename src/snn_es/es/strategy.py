"""OpenAI-style evolution strategy with an ask/tell interface.

Antithetic Gaussian perturbations, centred-rank fitness shaping, Adam or SGD on the ES
gradient estimate, decoupled weight decay, sigma / learning-rate schedules, and optionally a
per-parameter sigma adapted SNES-style (``sigma_lr``).

Noise is never stored: member ``m`` of generation ``g`` is ``theta + sign * sigma * eps``
with ``eps`` drawn from a generator seeded by ``(seed, "es-noise", g, m // 2)`` and
``sign = +1`` for even ``m``, ``-1`` for odd ``m``. Any member can be rebuilt anywhere, in
any order, which is what makes the sequential and chunked evaluators agree and resumed runs
bit-identical.

Low-rank noise (``rank = r > 0``, EGGROLL-style): every weight tensor of ``shapes`` with two
or more dimensions, viewed as a matrix [out, in], is perturbed by ``A @ B.T / sqrt(r)`` with
``A`` [out, r] and ``B`` [in, r] standard normal (entries of unit variance, like full-rank
noise); 1-d tensors (biases) keep full Gaussian noise. A chunk of members can then share
``x @ W`` and add a rank-r correction per member (``snn_es.es.population``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from snn_es.seeding import generator_from
from snn_es.settings import ESSettings

# A generation's noise is drawn once and reused by members() and tell(), up to this many
# numbers (256 MB of float32); bigger populations x parameters redraw it instead.
NOISE_CACHE_ELEMENTS = 64 * 2**20


def _decay(start: float, end: float, progress: float, shape: str) -> float:
    if shape == "cosine":
        return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))
    return start + (end - start) * progress  # linear


def centered_ranks(fitness: Tensor) -> Tensor:
    """Ranks scaled to [-0.5, 0.5]; ties broken by member index (deterministic)."""
    n = fitness.numel()
    order = torch.argsort(fitness, stable=True)
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = torch.arange(n, dtype=torch.float64)
    return ranks / (n - 1) - 0.5


@dataclass(frozen=True)
class LowRankNoise:
    """One antithetic pair's noise for one parameter tensor: ``A @ B.T / sqrt(r)`` for a
    weight matrix (``full`` is None), or a full Gaussian tensor ``full`` (biases)."""

    a: Tensor | None  # [out, r]
    b: Tensor | None  # [in, r], in = prod(shape[1:])
    full: Tensor | None

    def dense(self, shape: tuple[int, ...]) -> Tensor:
        if self.full is not None:
            return self.full
        rank = self.a.shape[1]
        return (self.a @ self.b.T).div_(math.sqrt(rank)).reshape(shape)


class OpenAIES:
    """Maximises a fitness; ``theta`` is a flat float vector.

    ``shapes`` (the parameter tensors' shapes, in ``theta``'s order) is needed only for
    low-rank noise (``settings.rank > 0``) and for ``fixed``: a flag per tensor; a fixed
    tensor gets zero noise, hence no step (the members and the centre keep its value).
    """

    def __init__(self, theta: Tensor, settings: ESSettings, seed: int,
                 shapes: tuple[tuple[int, ...], ...] | None = None,
                 fixed: tuple[bool, ...] | None = None):
        self.settings = settings
        self.seed = seed
        needs_shapes = settings.rank or settings.noise_scale == "layer" or fixed is not None
        if needs_shapes and (shapes is None
                             or sum(math.prod(s) for s in shapes) != theta.numel()):
            raise ValueError("low-rank or layer-scaled noise needs the parameter shapes of theta")
        self.shapes = tuple(tuple(s) for s in shapes) if shapes is not None else None
        self.fixed = tuple(fixed) if fixed is not None and any(fixed) else None
        self.free: Tensor | None = None  # 1 where a parameter is perturbed, 0 where fixed
        if self.fixed is not None:
            if len(self.fixed) != len(self.shapes):
                raise ValueError("fixed needs one flag per parameter tensor")
            self.free = torch.cat([torch.full((math.prod(s),), 0.0 if f else 1.0,
                                              dtype=theta.dtype, device=theta.device)
                                   for s, f in zip(self.shapes, self.fixed)])
        # noise_scale "layer": ES runs on theta / s_k per tensor k (s_k = its initial std),
        # so sigma and the step are relative to each layer's own scale.
        self.tensor_scales: tuple[float, ...] | None = None
        self.scale: Tensor | None = None
        if settings.noise_scale == "layer":
            parts = torch.split(theta.detach(), [math.prod(s) for s in self.shapes])
            self.tensor_scales = tuple(float(p.std()) if p.numel() > 1 and float(p.std()) > 0
                                       else 1.0 for p in parts)
            self.scale = torch.cat([torch.full((p.numel(),), scale, dtype=theta.dtype)
                                    for p, scale in zip(parts, self.tensor_scales)])
        # sigma_lr > 0: a per-parameter multiplier exp(log_sigma) of sigma, adapted from the
        # fitness as SNES adapts its diagonal (Wierstra et al. 2014); ES then runs, like the
        # layer scale, on theta divided by the current per-parameter scale.
        self.log_sigma: Tensor | None = (torch.zeros_like(theta.detach())
                                         if settings.sigma_lr else None)
        self._noise_cache: dict[tuple[int, int], Tensor] = {}
        self.theta = theta.detach().clone()
        self.m = torch.zeros_like(self.theta)  # adam first moment / sgd momentum buffer
        self.v = torch.zeros_like(self.theta)  # adam second moment
        self.steps = 0

    # --- schedules -------------------------------------------------------------------
    def _progress(self, generation: int) -> float:
        return generation / max(1, self.settings.generations - 1)

    def sigma_at(self, generation: int) -> float:
        s = self.settings
        if s.sigma_final is None:
            return s.sigma
        return _decay(s.sigma, s.sigma_final, self._progress(generation), "linear")

    def lr_at(self, generation: int) -> float:
        s = self.settings
        if s.lr_schedule == "constant":
            return s.lr
        return _decay(s.lr, s.lr * s.lr_final_ratio, self._progress(generation), s.lr_schedule)

    # --- ask ---------------------------------------------------------------------------
    def low_rank_noise(self, generation: int, pair: int) -> list[LowRankNoise]:
        """The pair's noise per parameter tensor, in factored form (``rank > 0`` only)."""
        rank = self.settings.rank
        if not rank:
            raise ValueError("low_rank_noise needs settings.rank > 0")
        gen = generator_from(self.seed, "es-noise", generation, pair)
        out = []
        for k, shape in enumerate(self.shapes):
            # a fixed tensor's noise is drawn too (the stream of the others stays the same)
            # and zeroed
            keep = 0.0 if self.fixed is not None and self.fixed[k] else 1.0
            if len(shape) >= 2:
                a = torch.randn(shape[0], rank, generator=gen, dtype=self.theta.dtype) * keep
                b = torch.randn(math.prod(shape[1:]), rank, generator=gen, dtype=self.theta.dtype)
                out.append(LowRankNoise(a.to(self.theta.device), b.to(self.theta.device), None))
            else:
                out.append(LowRankNoise(None, None, (torch.randn(
                    shape, generator=gen, dtype=self.theta.dtype) * keep).to(self.theta.device)))
        return out

    def noise(self, generation: int, pair: int) -> Tensor:
        """The pair's flat noise vector ``eps`` (cached for the current generation)."""
        key = (generation, pair)
        if key not in self._noise_cache:
            if any(g != generation for g, _ in self._noise_cache):
                self._noise_cache.clear()  # a new generation: the old noise is not needed
            if self.settings.rank:
                parts = self.low_rank_noise(generation, pair)
                eps = torch.cat([p.dense(s).reshape(-1) for p, s in zip(parts, self.shapes)])
            else:
                gen = generator_from(self.seed, "es-noise", generation, pair)
                # drawn on the CPU (its generator), so every device sees the same noise
                eps = torch.randn(self.theta.shape, generator=gen,
                                  dtype=self.theta.dtype).to(self.theta.device)
                if self.free is not None:
                    eps = eps * self.free
            if (len(self._noise_cache) + 1) * eps.numel() <= NOISE_CACHE_ELEMENTS:
                self._noise_cache[key] = eps
            return eps
        return self._noise_cache[key]

    @property
    def parameter_scale(self) -> Tensor | None:
        """Per-parameter factor of sigma and of the step (layer scale x adapted sigma), or
        None where every parameter has factor 1."""
        if self.log_sigma is None:
            return self.scale
        adapted = self.log_sigma.exp()
        return adapted if self.scale is None else self.scale * adapted

    def member(self, generation: int, index: int) -> Tensor:
        """Flat parameters of one population member."""
        sign = 1.0 if index % 2 == 0 else -1.0
        eps = self.noise(generation, index // 2)
        scale = self.parameter_scale
        if scale is not None:
            eps = eps * scale
        return self.theta + (sign * self.sigma_at(generation)) * eps

    def members(self, generation: int, start: int, stop: int) -> Tensor:
        """Flat parameters of members ``start..stop-1`` stacked as [stop - start, D]."""
        return torch.stack([self.member(generation, i) for i in range(start, stop)])

    # --- tell --------------------------------------------------------------------------
    def gradient(self, generation: int, fitness: Tensor) -> Tensor:
        """ES estimate of the gradient of the expected fitness (ascent direction), with
        respect to theta, or to theta / scale per tensor with ``noise_scale: layer``."""
        shaped = centered_ranks(fitness.detach().cpu().double())
        weights = shaped[0::2] - shaped[1::2]  # antithetic pairs: (+eps) minus (-eps)
        grad = torch.zeros_like(self.theta)
        for pair, weight in enumerate(weights.tolist()):
            if weight != 0.0:
                grad.add_(self.noise(generation, pair), alpha=weight)
        return grad / (self.settings.population * self.sigma_at(generation))

    def log_sigma_gradient(self, generation: int, fitness: Tensor) -> Tensor:
        """SNES's natural gradient of the log sigmas, sum_m u_m (eps_m^2 - 1), with the
        centred ranks scaled to sum |u| = 1 like SNES's utilities. A pair shares eps^2, so it
        weighs in with the sum of its two ranks: sigma grows where both signs did well."""
        shaped = centered_ranks(fitness.detach().cpu().double()) * (4 / fitness.numel())
        weights = shaped[0::2] + shaped[1::2]
        grad = torch.zeros_like(self.theta)
        for pair, weight in enumerate(weights.tolist()):
            if weight != 0.0:
                grad.add_(self.noise(generation, pair).square() - 1, alpha=weight)
        return grad

    def tell(self, generation: int, fitness: Tensor) -> Tensor:
        """Update theta from the population's fitness; returns the gradient estimate."""
        if fitness.numel() != self.settings.population:
            raise ValueError(f"expected {self.settings.population} fitness values")
        s = self.settings
        grad = self.gradient(generation, fitness)
        self.step(generation, grad)
        if self.log_sigma is not None:  # from the same members, as SNES does
            self.log_sigma.add_(self.log_sigma_gradient(generation, fitness),
                                alpha=s.sigma_lr / 2)
        return grad

    def step(self, generation: int, grad: Tensor) -> None:
        """The optimizer's step on theta along ``grad`` (an ascent direction)."""
        s = self.settings
        lr = self.lr_at(generation)
        self.steps += 1
        if s.optimizer == "adam":
            self.m.mul_(s.adam_beta1).add_(grad, alpha=1 - s.adam_beta1)
            self.v.mul_(s.adam_beta2).addcmul_(grad, grad, value=1 - s.adam_beta2)
            m_hat = self.m / (1 - s.adam_beta1**self.steps)
            v_hat = self.v / (1 - s.adam_beta2**self.steps)
            step = m_hat / (v_hat.sqrt() + s.adam_eps)
        else:
            self.m.mul_(s.momentum).add_(grad)
            step = self.m
        if s.weight_decay:
            decay = 1 - lr * s.weight_decay
            self.theta.mul_(decay if self.free is None else 1 - (1 - decay) * self.free)
        scale = self.parameter_scale
        if scale is not None:
            step = step * scale  # back from the scaled coordinates to theta
        self.theta.add_(step, alpha=lr)

    # --- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"theta": self.theta.clone(), "m": self.m.clone(), "v": self.v.clone(),
                 "steps": self.steps, "settings": asdict(self.settings), "seed": self.seed}
        if self.log_sigma is not None:
            state["log_sigma"] = self.log_sigma.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["settings"] != asdict(self.settings) or state["seed"] != self.seed:
            raise ValueError("checkpoint was made with different ES settings or seed")
        self.theta.copy_(state["theta"])
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
        self.steps = int(state["steps"])
        if self.log_sigma is not None:
            self.log_sigma.copy_(state["log_sigma"])
