"""Input encoders: rates, exact spike counts/times, reproducibility and error messages."""

from __future__ import annotations

import pytest
import torch

from snn_es.encoders import (
    ENCODERS,
    deterministic,
    encode,
    generator_from,
    latency,
    poisson,
    poisson_from_uniform,
    repeat,
    to_float,
    uniform_noise,
)


def rand(*shape: int, dtype=torch.float32) -> torch.Tensor:
    """Seeded test images (tests never touch the global RNG)."""
    return torch.rand(shape, generator=generator_from("test-images", *shape), dtype=dtype)


def intensity_images(values: list[float], dtype=torch.float32) -> torch.Tensor:
    """One 1x1xN image per call: [1, 1, 1, N] holding the given intensities."""
    return torch.tensor(values, dtype=dtype).view(1, 1, 1, -1)


def test_to_float_scales_uint8_and_passes_floats_through():
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    out = to_float(images)
    assert out.dtype == torch.float32
    assert out.min() == 0 and out.max() == 1
    torch.testing.assert_close(out.flatten()[51], torch.tensor(0.2))
    floats = rand(2, 3, 4, 4)
    assert to_float(floats) is floats
    with pytest.raises(TypeError, match="uint8 or floating"):
        to_float(torch.zeros(2, dtype=torch.int32))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_gives_t_b_c_h_w_in_the_image_dtype(name):
    images = rand(2, 3, 5, 4, dtype=torch.float64)
    out = encode(name, images, 6, generator_from(0, 0, 0))
    assert out.shape == (6, 2, 3, 5, 4)
    assert out.dtype == torch.float64


def test_poisson_rate_approaches_intensity():
    probs = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]
    spikes = poisson(intensity_images(probs), 4000, generator_from(7, 0, 0))
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rates = spikes.mean(0).flatten()
    # binomial std <= sqrt(0.25 / 4000) ~ 0.008; p = 0 and p = 1 are exact
    torch.testing.assert_close(rates, torch.tensor(probs), atol=0.035, rtol=0)
    assert rates[0] == 0 and rates[-1] == 1


def test_poisson_same_seed_same_spikes_other_seed_other_spikes():
    images = rand(4, 3, 8, 8)
    first = poisson(images, 8, generator_from(1, 2, 3))
    again = poisson(images, 8, generator_from(1, 2, 3))
    other = poisson(images, 8, generator_from(1, 2, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_poisson_noise_does_not_depend_on_image_dtype():
    images = rand(2, 1, 6, 6)
    as_float32 = poisson(images, 5, generator_from(3))
    as_float64 = poisson(images.double(), 5, generator_from(3))
    assert torch.equal(as_float32, as_float64.float())


def test_poisson_from_uniform_matches_poisson_and_vmaps():
    images = rand(3, 1, 4, 4)
    noise = uniform_noise(images, 6, generator_from(5, 1))
    assert noise.shape == (6, 3, 1, 4, 4)
    assert torch.equal(
        poisson_from_uniform(images, noise), poisson(images, 6, generator_from(5, 1))
    )
    # a batch of pregenerated noises (e.g. one per population member) under vmap
    noises = torch.stack([uniform_noise(images, 6, generator_from(5, m)) for m in range(3)])
    batched = torch.func.vmap(poisson_from_uniform, in_dims=(None, 0))(images, noises)
    for member in range(3):
        assert torch.equal(batched[member], poisson_from_uniform(images, noises[member]))


def test_poisson_requires_an_explicit_generator():
    images = rand(1, 1, 2, 2)
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        poisson(images, 4)
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        encode("poisson", images, 4)


@pytest.mark.parametrize("num_steps", [1, 7, 8, 16, 100, 255])
def test_deterministic_count_is_floor_t_times_p_for_every_uint8_level(num_steps):
    levels = torch.arange(256)
    images = to_float(levels.to(torch.uint8).view(1, 1, 16, 16))
    counts = deterministic(images, num_steps).sum(0).flatten().long()
    # exact integer floor(T * k / 255): no rounding drift from the float intensities
    assert torch.equal(counts, (num_steps * levels) // 255)


def test_deterministic_spike_times_are_regular():
    spikes = deterministic(intensity_images([0.0, 0.25, 0.5, 1.0]), 8)
    trains = spikes[:, 0, 0, 0, :].T  # [pixel, step]
    assert trains[0].tolist() == [0] * 8
    assert trains[1].tolist() == [0, 0, 0, 1, 0, 0, 0, 1]  # first spike at ceil(1/p) - 1
    assert trains[2].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert trains[3].tolist() == [1] * 8
    # deterministic: a generator changes nothing
    assert torch.equal(
        deterministic(intensity_images([0.3]), 9, generator_from(1)),
        deterministic(intensity_images([0.3]), 9),
    )


def test_repeat_repeats_the_analog_image_exactly():
    images = rand(2, 3, 4, 4)
    out = repeat(images, 5)
    assert out.shape == (5, 2, 3, 4, 4)
    for t in range(5):
        assert torch.equal(out[t], images)
    assert out.data_ptr() == images.data_ptr()  # a view, not a copy


def test_latency_fires_once_at_round_one_minus_p_times_t_minus_one():
    probs = [0.0, 0.01, 0.25, 0.5, 0.8, 1.0]
    num_steps = 9
    spikes = latency(intensity_images(probs), num_steps)[:, 0, 0, 0, :].T  # [pixel, step]
    counts = spikes.sum(1).tolist()
    assert counts == [0, 1, 1, 1, 1, 1]  # p == 0 never fires, every other pixel once
    first = spikes[1:].argmax(1).tolist()
    # (1-p)*(T-1) = 7.92, 6, 4, 1.6, 0 -> rounded
    assert first == [8, 6, 4, 2, 0]


def test_unknown_encoder_names_the_valid_ones():
    with pytest.raises(ValueError) as excinfo:
        encode("rate", rand(1, 1, 2, 2), 4)
    message = str(excinfo.value)
    assert "'rate'" in message
    for name in ("deterministic", "latency", "poisson", "repeat"):
        assert name in message


def test_generator_from_is_a_pure_function_of_the_keys():
    draw = lambda *keys: torch.rand(4, generator=generator_from(*keys))  # noqa: E731
    assert torch.equal(draw(0, 1, 2), draw(0, 1, 2))
    assert not torch.equal(draw(0, 1, 2), draw(0, 2, 1))
    assert not torch.equal(draw(0, 1, 2), draw(0, 1, 2, 0))
