"""Population evaluators: ``sequential`` (one member at a time, the reference) and ``chunked``
(chunks of C members in one ``torch.func.vmap`` call over stacked parameters).

Both rebuild members from the strategy's counter-based noise and draw spikes from generators
seeded by ``(seed, "spikes", generation[, member])``, so they see exactly the same weights
and spikes and give the same fitness, whatever the chunk size. Random draws happen outside
``vmap`` (which refuses random ops): a chunk's spike samples are drawn first and then mapped
over together with its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from snn_es.encoders import encode
from snn_es.es.params import ParamLayout
from snn_es.es.strategy import OpenAIES
from snn_es.models import SNNConfig, snn_functional_forward
from snn_es.seeding import generator_from

STOCHASTIC_ENCODERS = ("poisson",)
SPIKE_NOISE = ("shared", "per_member")
EVALUATORS = ("sequential", "chunked")


@dataclass(frozen=True)
class PopulationTask:
    """What one generation's population is scored on."""

    cfg: SNNConfig
    layout: ParamLayout
    encoder: str
    seed: int
    spike_noise: str = "shared"  # shared: common random spikes across the population

    def __post_init__(self) -> None:
        if self.spike_noise not in SPIKE_NOISE:
            raise ValueError(f"spike_noise must be one of {SPIKE_NOISE}, got {self.spike_noise!r}")

    @property
    def static_input(self) -> bool:
        # repeat: feed the image itself; the first conv runs once instead of T times.
        return self.encoder == "repeat"

    @property
    def per_member_spikes(self) -> bool:
        return self.spike_noise == "per_member" and self.encoder in STOCHASTIC_ENCODERS

    def inputs(self, images: Tensor, generation: int, member: int | None) -> Tensor:
        """The network input for ``member`` (ignored unless spikes are per member)."""
        if self.static_input:
            return images
        keys = (self.seed, "spikes", generation)
        if self.per_member_spikes:
            keys += (member,)
        generator = generator_from(*keys) if self.encoder in STOCHASTIC_ENCODERS else None
        return encode(self.encoder, images, self.cfg.num_steps, generator)

    def score(self, params: dict[str, Tensor], x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(fitness = -cross-entropy, accuracy) of one member on the minibatch."""
        logits, _ = snn_functional_forward(params, x, self.cfg, static_input=self.static_input)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(-1) == labels).to(logits.dtype).mean()
        return -loss, accuracy


@torch.no_grad()
def evaluate_sequential(
    strategy: OpenAIES, generation: int, images: Tensor, labels: Tensor, task: PopulationTask
) -> tuple[Tensor, Tensor]:
    """Score members one at a time. Returns (fitness [P], accuracy [P])."""
    fitness, accuracy = [], []
    shared = None if task.per_member_spikes else task.inputs(images, generation, None)
    for member in range(strategy.settings.population):
        params = task.layout.unflatten(strategy.member(generation, member))
        x = task.inputs(images, generation, member) if shared is None else shared
        f, a = task.score(params, x, labels)
        fitness.append(f)
        accuracy.append(a)
    return torch.stack(fitness), torch.stack(accuracy)


@torch.no_grad()
def evaluate_chunked(
    strategy: OpenAIES,
    generation: int,
    images: Tensor,
    labels: Tensor,
    task: PopulationTask,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """Score members in chunks of ``chunk_size`` with one vmapped call per chunk."""
    population = strategy.settings.population
    shared = None if task.per_member_spikes else task.inputs(images, generation, None)
    scored = vmap(task.score, in_dims=(0, None if shared is not None else 0, None))
    fitness, accuracy = [], []
    for start in range(0, population, chunk_size):
        stop = min(start + chunk_size, population)
        params = task.layout.unflatten(strategy.members(generation, start, stop))
        if shared is None:
            x = torch.stack([task.inputs(images, generation, m) for m in range(start, stop)])
        else:
            x = shared
        f, a = scored(params, x, labels)
        fitness.append(f)
        accuracy.append(a)
    return torch.cat(fitness), torch.cat(accuracy)


def evaluate_population(
    mode: str,
    strategy: OpenAIES,
    generation: int,
    images: Tensor,
    labels: Tensor,
    task: PopulationTask,
    chunk_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """Dispatch to the evaluator called ``mode`` (``sequential`` or ``chunked``)."""
    if mode == "sequential":
        return evaluate_sequential(strategy, generation, images, labels, task)
    if mode == "chunked":
        return evaluate_chunked(strategy, generation, images, labels, task, chunk_size)
    raise ValueError(f"unknown ES mode {mode!r}; valid modes: {', '.join(EVALUATORS)}")
