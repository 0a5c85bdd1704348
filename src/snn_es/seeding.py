"""The project's one seeding rule: every random draw comes from a generator seeded by a tuple.

A tuple such as ``(run_seed, generation, member)`` is hashed into a 63-bit seed, so a draw
depends only on *what* it is for, never on evaluation order, chunking, device or on how
many draws happened before it. That is what makes resumed runs bit-identical and lets the
sequential and chunked evaluators see the same random numbers.
"""

from __future__ import annotations

import hashlib

import torch


def seed_from(*keys: int | str) -> int:
    """Hash a tuple of ints/strings into a non-negative 63-bit seed (stable across machines)."""
    if not keys:
        raise ValueError("seed_from needs at least one key")
    text = "\x1f".join(f"{type(k).__name__}:{k}" for k in keys)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator_from(*keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded by ``seed_from(*keys)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed_from(*keys))
    return gen
