"""Flat parameter vectors <-> named parameter dicts (what ES perturbs <-> what the model reads)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ParamLayout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def flatten(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views into ``flat`` [..., D]; leading dims (a chunk of members) are kept."""
        lead = flat.shape[:-1]
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out[name] = flat[..., offset : offset + n].reshape(*lead, *shape)
            offset += n
        return out
