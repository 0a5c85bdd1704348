"""Input encoders: images in [0, 1] of shape [B, C, H, W] -> sequences [T, B, C, H, W].

Encoders
--------
``poisson``
    Bernoulli spike with probability = pixel intensity at every step, drawn from an explicit
    ``torch.Generator`` (never the global RNG). The uniform noise is always drawn as float32 on
    the generator's device, so a sample depends only on the generator's seed, not on the
    image dtype or device. ``poisson_from_uniform`` takes pre-drawn noise, so a batched
    evaluator can draw it outside ``torch.func.vmap``.
``deterministic``
    Regular spike train with rate = intensity, no randomness. It is the accumulator
    ``a_t = t * p`` (t = 1..T) that spikes whenever it crosses an integer:
    ``s_t = floor(t * p) - floor((t - 1) * p)``. Hence the spike count over T steps is exactly
    ``floor(T * p)`` and the first spike is at step index ``ceil(1 / p) - 1`` (0-based).
    The products are computed in float64, which is exact for float32 images (24-bit mantissa
    times a step count < 2**29), so no rounding drift accumulates as in a running sum.
``repeat``
    The analog image itself at every step (an ``expand`` view: no copy, do not write into it).
``latency``
    Time-to-first-spike: one spike per pixel at step index ``round((1 - p) * (T - 1))``
    (``torch.round``, i.e. half to even) for p > 0, no spike for p == 0. Brighter pixels fire
    earlier; p == 1 fires at step 0.

All encoders assume intensities in [0, 1]; out-of-range values are not clipped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# One seeding rule for the whole project: re-exported so callers of the encoders need not
# know where it lives. Use it as generator_from(run_seed, generation, sample[, member]).
from snn_es.seeding import generator_from, seed_from
from snn_es.settings import AUGMENTS

__all__ = [
    "ENCODERS",
    "deterministic",
    "encode",
    "generator_from",
    "latency",
    "poisson",
    "poisson_from_uniform",
    "repeat",
    "seed_from",
    "to_float",
    "uniform_noise",
]

Tensor = torch.Tensor


def to_float(images: Tensor) -> Tensor:
    """uint8 images in 0..255 -> float32 in [0, 1]; floating images are returned unchanged."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if images.is_floating_point():
        return images
    raise TypeError(f"to_float expects uint8 or floating images, got {images.dtype}")


def _check_steps(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


def uniform_noise(images: Tensor, num_steps: int, generator: torch.Generator) -> Tensor:
    """Uniform [0, 1) noise of shape [T, *images.shape] on ``images.device``.

    Drawn as float32 on the generator's device and then moved, so the same generator state
    gives the same noise whatever the images' dtype or device.
    """
    _check_steps(num_steps)
    noise = torch.rand(
        (num_steps, *images.shape),
        generator=generator,
        device=generator.device,
        dtype=torch.float32,
    )
    return noise.to(device=images.device)


def poisson_from_uniform(images: Tensor, uniform: Tensor) -> Tensor:
    """Poisson (Bernoulli) spikes from pre-drawn uniform noise ``uniform`` [T, *images.shape].

    ``u < p`` spikes with probability p; p == 0 never spikes and p == 1 always does, because
    ``torch.rand`` lies in [0, 1). Pure tensor op, safe under ``torch.func.vmap``.
    """
    return (uniform < images.unsqueeze(0)).to(images.dtype)


def poisson(images: Tensor, num_steps: int, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli spikes with p = intensity at every step, from an explicit generator."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "the poisson encoder needs an explicit torch.Generator (e.g. "
            "generator_from(run_seed, generation, sample)); it never uses the global RNG"
        )
    return poisson_from_uniform(images, uniform_noise(images, num_steps, generator))


def deterministic(
    images: Tensor, num_steps: int, generator: torch.Generator | None = None
) -> Tensor:
    """Regular spike trains: spike at step t (1-based) iff floor(t*p) > floor((t-1)*p).

    ``generator`` is ignored (accepted so every encoder has the same call signature).
    """
    _check_steps(num_steps)
    # float64: t * p is exact for float32 p, so the count is exactly floor(T * p).
    p = images.to(torch.float64).unsqueeze(0)
    t = torch.arange(num_steps + 1, dtype=torch.float64, device=images.device)
    t = t.view(-1, *([1] * images.dim()))
    crossings = torch.floor(t * p)  # integer part of the accumulator after t steps
    return (crossings[1:] - crossings[:-1]).to(images.dtype)


def repeat(images: Tensor, num_steps: int, generator: torch.Generator | None = None) -> Tensor:
    """The analog image at every step, as an expand view (shares memory with ``images``)."""
    _check_steps(num_steps)
    return images.unsqueeze(0).expand(num_steps, *images.shape)


def latency(images: Tensor, num_steps: int, generator: torch.Generator | None = None) -> Tensor:
    """One spike per pixel at step round((1 - p) * (T - 1)) if p > 0, none if p == 0."""
    _check_steps(num_steps)
    p = images.to(torch.float64)
    fire_step = torch.round((1.0 - p) * (num_steps - 1))
    steps = torch.arange(num_steps, dtype=torch.float64, device=images.device)
    steps = steps.view(-1, *([1] * images.dim()))
    spikes = (steps == fire_step.unsqueeze(0)) & (p > 0).unsqueeze(0)
    return spikes.to(images.dtype)


Encoder = Callable[[Tensor, int, torch.Generator | None], Tensor]

ENCODERS: dict[str, Encoder] = {
    "poisson": poisson,
    "deterministic": deterministic,
    "repeat": repeat,
    "latency": latency,
}


def encode(
    name: str, images: Tensor, num_steps: int, generator: torch.Generator | None = None
) -> Tensor:
    """Encode float images [B, C, H, W] in [0, 1] with the encoder called ``name``."""
    try:
        encoder = ENCODERS[name]
    except KeyError:
        raise ValueError(
            f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(ENCODERS))}"
        ) from None
    return encoder(images, num_steps, generator)


# `flip_translate`'s largest shift in pixels (airbench94's CIFAR-10 augmentation: flip plus
# translate 2 of reflection-padded images)
TRANSLATE_PIXELS = 2


def augment_images(images: Tensor, kind: str, *keys: int | str) -> Tensor:
    """Training images [B, C, H, W] as ES sees them: unchanged (``none``); ``flip``: each
    image mirrored left-right with probability 1/2; ``flip_translate``: the same mirroring,
    then each image shifted by up to ``TRANSLATE_PIXELS`` in each direction (uniform, borders
    filled by reflection). One coin (and shift) per image from the generator seeded by
    ``keys`` (a new minibatch, a new draw; see ``snn_es.seeding``); the coins come first, so
    ``flip_translate`` mirrors exactly the images that ``flip`` mirrors."""
    if kind not in AUGMENTS:
        raise ValueError(f"augment must be {', '.join(AUGMENTS[:-1])} or {AUGMENTS[-1]}, "
                         f"got {kind!r}")
    if kind == "none":
        return images
    generator = generator_from(*keys)
    coins = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(coins[:, None, None, None], images.flip(-1), images)
    if kind == "flip":
        return images
    pad = TRANSLATE_PIXELS
    shifts = torch.randint(0, 2 * pad + 1, (len(images), 2), generator=generator).tolist()
    padded = torch.nn.functional.pad(images, (pad,) * 4, mode="reflect")
    height, width = images.shape[-2:]
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width]
                        for i, (dy, dx) in enumerate(shifts)])
