"""Readout-only ES steps: many cheap members that reuse the centre's hidden spikes.

About 80% of the SNN's weights are in the readout (``fc``), and with the membrane readout
the logits are linear in the last hidden layer's spikes: the output membrane is a leaky
integral of ``W h[t] + b`` without reset, so its mean over T is

    logits = W s + k b,   s = mean_t sum_{u <= t} beta^(t-u) h[u],   k = the same of 1

(``lif.output_layer`` applied to the spikes and to a constant 1 computes ``s`` and ``k``).
A member that perturbs only the readout therefore needs no conv at all: one forward of the
centre gives ``s`` for the minibatch, and each member costs a [B, F] x [F, K] product, about
1/50 of a full CIFAR-10 member evaluation.

After every full generation, ``ReadoutES.step`` runs ``es.readout_steps`` such steps, each an
OpenAI-ES generation (antithetic noise of the run's rank, centred ranks, the run's
optimizer) over the readout's weights only, with ``es.readout_population`` members on a fresh minibatch of
``es.readout_batch_size`` images. Its randomness follows the seeding rule with its own keys:
the minibatch of readout step ``i`` from ``(seed, "readout-batch", i)`` (its augmentation,
``es.augment``, from ``(seed, "readout-augment", i)``), its spikes from
``(seed, "readout-spikes", i)`` and its noise from ``(seed_from(seed, "readout"),
"es-noise", i, pair)``, where ``i = generation * readout_steps + j``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from snn_es.encoders import augment_images, encode, to_float
from snn_es.es.evaluate import STOCHASTIC_ENCODERS
from snn_es.es.params import ParamLayout
from snn_es.es.population import population_scores
from snn_es.es.strategy import OpenAIES, centered_ranks
from snn_es.lif import output_layer
from snn_es.models import snn_functional_forward
from snn_es.seeding import generator_from, seed_from
from snn_es.settings import ESSettings, SNNSettings

READOUT_NAMES = ("fc.weight", "fc.bias")


def readout_settings(es: ESSettings) -> ESSettings:
    """The readout steps' own OpenAI-ES: the run's optimizer, noise rank and schedule shape,
    with the readout population, minibatch, sigma and lr, a constant sigma, and one schedule
    position per readout step."""
    return replace(es, generations=es.generations * es.readout_steps,
                   population=es.readout_population, batch_size=es.readout_batch_size,
                   sigma=es.readout_sigma, sigma_final=None, lr=es.readout_lr,
                   sigma_lr=0.0, noise_scale="absolute", readout_steps=0, perturb_readout=True,
                   train_hidden=True)


def readout_features(params: dict[str, Tensor], x: Tensor, cfg: SNNSettings,
                     static_input: bool, fused: bool, image_chunk: int | None = None) -> Tensor:
    """``s`` [B, F]: the centre's last hidden spikes through the readout's linear filter,
    computed in pieces of ``image_chunk`` images (cache-sized, as the chunked evaluator)."""
    images = x.shape[0 if static_input else 1]
    piece = image_chunk or images
    out = []
    for first in range(0, images, piece):
        part = x[first:first + piece] if static_input else x[:, first:first + piece]
        _, records = snn_functional_forward(params, part, cfg, static_input=static_input,
                                            fused=fused)
        hidden = records[f"lif{len(cfg.channels)}"].flatten(2)  # [T, B, F]
        out.append(output_layer(hidden, cfg)[0])
    return torch.cat(out)


@functools.cache  # derivable from cfg: computed once, not at every readout step
def bias_gain(cfg: SNNSettings) -> float:
    """``k``: the readout filter's response to a constant current of 1."""
    return float(output_layer(torch.ones(cfg.num_steps, 1, 1, dtype=torch.float64), cfg)[0])


def readout_logits(features: Tensor, weight: Tensor, bias: Tensor, cfg: SNNSettings) -> Tensor:
    """Logits [C, B, K] of C readouts (``weight`` [C, K, F], ``bias`` [C, K]) on ``s``."""
    return torch.einsum("bf,ckf->cbk", features, weight) + bias_gain(cfg) * bias[:, None, :]


def low_rank_factors(strategy: OpenAIES, index: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every pair's readout noise of step ``index`` in factored form: ``A`` [P/2, K, r],
    ``B`` [P/2, F, r] of the weight and the bias noise ``e`` [P/2, K]."""
    pairs = [strategy.low_rank_noise(index, p) for p in range(strategy.settings.population // 2)]
    return (torch.stack([noise[0].a for noise in pairs]),
            torch.stack([noise[0].b for noise in pairs]),
            torch.stack([noise[1].full for noise in pairs]))


def low_rank_logits(features: Tensor, strategy: OpenAIES, index: int, cfg: SNNSettings,
                    factors: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """Logits [C, B, K] of the readout members of a low-rank strategy, from the factors:
    member ``2p`` / ``2p+1`` is ``W +- sigma A_p B_p.T / sqrt(r)`` (bias ``b +- sigma e_p``),
    so its logits are the centre's plus ``+-sigma ((s B_p) A_p.T / sqrt(r) + k e_p)``: a
    [B, F] x [F, r] product per member instead of [B, F] x [F, K]."""
    a, b, e = factors if factors is not None else low_rank_factors(strategy, index)
    weight, bias = strategy.theta[:-cfg.num_classes], strategy.theta[-cfg.num_classes:]
    gain, sigma = bias_gain(cfg), strategy.sigma_at(index)
    centre = features @ weight.reshape(cfg.num_classes, -1).T + gain * bias  # [B, K]
    projected = torch.einsum("bf,pfr->pbr", features, b)  # [P/2, B, r]
    delta = projected @ a.transpose(1, 2) / a.shape[-1] ** 0.5 + gain * e[:, None, :]
    delta = delta * sigma
    return torch.stack([centre + delta, centre - delta], dim=1).flatten(0, 1)  # +, - per pair


def low_rank_gradient(strategy: OpenAIES, index: int, fitness: Tensor,
                      factors: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``strategy.gradient(index, fitness)`` from the factors, without building each pair's
    dense noise: ``sum_p w_p [A_p B_p.T / sqrt(r), e_p] / (P sigma)``."""
    a, b, e = factors
    shaped = centered_ranks(fitness.detach().cpu().double())
    weights = (shaped[0::2] - shaped[1::2]).to(a.dtype).to(a.device)
    weight_grad = torch.einsum("p,pkr,pfr->kf", weights, a, b) / a.shape[-1] ** 0.5
    grad = torch.cat([weight_grad.reshape(-1), weights @ e])
    return grad / (strategy.settings.population * strategy.sigma_at(index))


class ReadoutES:
    """The readout-only steps of one run (``es.readout_steps > 0``)."""

    def __init__(self, cfg: SNNSettings, layout: ParamLayout, es: ESSettings, seed: int,
                 encoder: str, theta: Tensor, fused: bool = False,
                 image_chunk: int | None = None):
        if cfg.readout != "membrane":
            raise ValueError(
                f"es.readout_steps needs snn.readout: membrane (the logits must be linear in "
                f"the hidden spikes); got readout {cfg.readout!r}: set es.readout_steps: 0")
        if layout.names[-2:] != READOUT_NAMES:
            raise ValueError(f"the readout must be the last parameters {READOUT_NAMES}")
        self.cfg, self.layout, self.es, self.seed = cfg, layout, es, seed
        self.encoder, self.fused, self.image_chunk = encoder, fused, image_chunk  # speed only
        self.size = sum(math.prod(s) for s in layout.shapes[-2:])
        self.strategy = OpenAIES(theta[-self.size:], readout_settings(es),
                                 seed_from(seed, "readout"), shapes=layout.shapes[-2:])

    @property
    def evaluations_per_generation(self) -> int:
        return self.es.readout_steps * self.es.readout_population * self.es.readout_batch_size

    def _inputs(self, images: Tensor, index: int) -> Tensor:
        if self.encoder == "repeat":
            return images
        generator = (generator_from(self.seed, "readout-spikes", index)
                     if self.encoder in STOCHASTIC_ENCODERS else None)
        return encode(self.encoder, images, self.cfg.num_steps, generator)

    @torch.no_grad()
    def step(self, theta: Tensor, generation: int, train_x: Tensor, train_y: Tensor) -> Tensor:
        """Run this generation's readout steps on ``theta`` (updated in place); returns the
        fitness of the last step's members."""
        strategy, es = self.strategy, self.es
        strategy.theta.copy_(theta[-self.size:])  # the full generation moved the readout too
        count, classes = es.readout_population, self.cfg.num_classes
        fitness = torch.empty(0)
        for j in range(es.readout_steps):
            index = generation * es.readout_steps + j
            order = torch.randperm(len(train_y), generator=generator_from(
                self.seed, "readout-batch", index))[: es.readout_batch_size]
            images = augment_images(to_float(train_x[order]), es.augment, self.seed,
                                    "readout-augment", index).to(theta.device)
            labels = train_y[order].to(theta.device)
            params = self.layout.unflatten(theta)
            features = readout_features(params, self._inputs(images, index).to(theta.device),
                                        self.cfg, self.encoder == "repeat", self.fused,
                                        self.image_chunk)
            if strategy.settings.rank:
                factors = low_rank_factors(strategy, index)
                logits = low_rank_logits(features, strategy, index, self.cfg, factors)
                fitness, _ = population_scores(logits, labels, es.fitness)
                strategy.step(index, low_rank_gradient(strategy, index, fitness, factors))
            else:
                members = strategy.members(index, 0, count)  # [C, K*F + K]
                weight = members[:, :-classes].reshape(count, classes, -1)
                logits = readout_logits(features, weight, members[:, -classes:], self.cfg)
                fitness, _ = population_scores(logits, labels, es.fitness)
                strategy.tell(index, fitness)
            theta[-self.size:] = strategy.theta
        return fitness

    def state_dict(self) -> dict[str, Any]:
        return self.strategy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy.load_state_dict(state)
