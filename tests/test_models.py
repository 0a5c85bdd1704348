"""SNN: shapes, snnTorch semantics, and exact agreement of the functional twin with snnTorch."""

from __future__ import annotations

import copy
import warnings

import pytest
import snntorch as snn
import torch

from snn_es.encoders import ENCODERS, encode, generator_from
from snn_es.lif import lif_scan, spike_fn
from snn_es.models import SNN, BaselineCNN, make_snn, snn_functional_forward, spike_rates
from snn_es.settings import SNNSettings

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)


def active_snn(cfg: SNNSettings, seed: int = 0, gain: float = 3.0) -> SNN:
    """A float64 SNN whose weights are scaled up so every layer spikes on random inputs."""
    model = make_snn(cfg, seed).double()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(gain)
    return model


def random_images(shape, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand((batch, *shape), generator=generator_from(seed), dtype=torch.float64)


def params_of(model: SNN) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


def assert_same_outputs(a, b) -> None:
    (logits_a, records_a), (logits_b, records_b) = a, b
    assert records_a.keys() == records_b.keys()
    for name in records_a:
        assert torch.equal(records_a[name], records_b[name]), f"spikes differ in {name}"
    torch.testing.assert_close(logits_a, logits_b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- config, shapes


def test_config_normalises_lists_and_rejects_bad_values():
    cfg = SNNSettings(input_shape=[1, 28, 28], channels=[8, 16])
    assert cfg.input_shape == MNIST and cfg.channels == (8, 16)
    assert cfg.feature_shape == (16, 7, 7)
    assert cfg.layer_names == ("lif1", "lif2", "lif_out")
    assert SNNSettings(surrogate="fast_sigmoid").slope == 25.0
    with pytest.raises(ValueError, match="reset_mechanism"):
        SNNSettings(reset_mechanism="none")
    with pytest.raises(ValueError, match="readout"):
        SNNSettings(readout="rate")
    with pytest.raises(ValueError, match="odd"):
        SNNSettings(kernel_size=4)
    with pytest.raises(ValueError, match="too small"):
        SNNSettings(input_shape=(1, 3, 3), channels=(4, 4))


@pytest.mark.parametrize("readout", ["membrane", "spike_count"])
@pytest.mark.parametrize(("shape", "side"), [(CIFAR, 32), (MNIST, 28)])
def test_default_snn_shapes(shape, side, readout):
    cfg = SNNSettings(input_shape=shape, readout=readout, num_steps=2)
    model = make_snn(cfg, 0)
    x = encode("poisson", random_images(shape, batch=3).float(), 2, generator_from(0))
    with torch.no_grad():
        for logits, records in (model(x), snn_functional_forward(params_of(model), x, cfg)):
            assert logits.shape == (3, 10)
            assert records["lif1"].shape == (2, 3, 16, side // 2, side // 2)
            assert records["lif2"].shape == (2, 3, 32, side // 4, side // 4)
            assert records["lif_out"].shape == (2, 3, 10)
    assert set(spike_rates(records)) == {"lif1", "lif2", "lif_out"}


def test_parameter_names_are_the_functional_keys():
    model = make_snn(SNNSettings(channels=(4, 8, 8)), 0)
    assert list(dict(model.named_parameters())) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
        "conv3.weight", "conv3.bias", "fc.weight", "fc.bias",
    ]  # fmt: skip


@pytest.mark.parametrize(("shape", "flat"), [(CIFAR, 128 * 8 * 8), (MNIST, 128 * 7 * 7)])
def test_baseline_cnn_shapes(shape, flat):
    model = BaselineCNN(shape, 10)
    assert model.classifier.in_features == flat
    assert model(random_images(shape).float()).shape == (2, 10)


def test_spike_rates_are_means_per_layer():
    records = {"a": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "b": torch.ones(3)}
    assert spike_rates(records) == {"a": 0.25, "b": 1.0}


def test_make_snn_is_seeded_and_leaves_the_global_rng_alone():
    cfg = SNNSettings(input_shape=MNIST, channels=(2, 4))
    state = torch.get_rng_state()
    a, b, c = make_snn(cfg, 1), make_snn(cfg, 1), make_snn(cfg, 2)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


# ---------------------------------------------------------------------------- neuron semantics


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_lif_scan_matches_snntorch_leaky(reset):
    # beta = 0.9 is not a float32 number: the twin must round it like snnTorch's buffer
    cfg = SNNSettings(beta=0.9, threshold=0.7)
    currents = torch.randn(12, 5, 7, generator=generator_from(3), dtype=torch.float64)
    leaky = snn.Leaky(beta=0.9, threshold=0.7, reset_mechanism=reset).double()
    mem, spikes, mems = torch.zeros_like(currents[0]), [], []
    for t in range(len(currents)):
        spk, mem = leaky(currents[t], mem)
        spikes.append(spk.double())
        mems.append(mem)
    beta, threshold = float(torch.tensor(0.9)), float(torch.tensor(0.7))
    got_spikes, got_mems = lif_scan(currents, beta, threshold, reset, spike_fn(cfg))
    assert torch.equal(got_spikes, torch.stack(spikes))
    assert torch.equal(got_mems, torch.stack(mems))
    assert 0 < got_spikes.mean() < 1


def test_spike_is_reset_on_the_next_step():
    # snnTorch semantics: spk[t] = H(mem[t] - thr) (strict), the reset uses mem[t-1]
    currents = torch.tensor([[1.5], [0.0], [1.0], [0.0]], dtype=torch.float64)
    spike = spike_fn(SNNSettings())
    spikes, mems = lif_scan(currents, 0.5, 1.0, "subtract", spike)
    assert spikes.flatten().tolist() == [1, 0, 0, 0]  # mem == thr (step 2) does not spike
    assert mems.flatten().tolist() == [1.5, -0.25, 0.875, 0.4375]
    spikes, mems = lif_scan(currents, 0.5, 1.0, "zero", spike)
    assert mems.flatten().tolist() == [1.5, 0.0, 1.0, 0.5]


# ---------------------------------------------------------------------------- functional twin


@pytest.mark.parametrize("readout", ["membrane", "spike_count"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("shape", [CIFAR, MNIST], ids=["cifar", "mnist"])
def test_functional_equals_snntorch_for_every_encoder(shape, reset, readout):
    cfg = SNNSettings(
        input_shape=shape, channels=(4, 8), num_steps=6, reset_mechanism=reset, readout=readout
    )
    model = active_snn(cfg)
    images = random_images(shape, batch=3)
    with torch.no_grad():
        for name in sorted(ENCODERS):
            x = encode(name, images, cfg.num_steps, generator_from(0, 1, 2))
            reference = model(x)
            assert_same_outputs(snn_functional_forward(params_of(model), x, cfg), reference)
            rates = spike_rates(reference[1])
            assert 0 < rates["lif1"] < 1 and 0 < rates["lif2"] < 1, (name, rates)


def test_functional_equals_snntorch_in_float32():
    # the dtype ES runs in; conv rounding may differ, but not enough to flip a spike here
    cfg = SNNSettings(input_shape=CIFAR, channels=(4, 8), num_steps=6, readout="spike_count")
    model = active_snn(cfg).float()
    x = encode("poisson", random_images(CIFAR).float(), 6, generator_from(5))
    with torch.no_grad():
        logits, records = snn_functional_forward(params_of(model), x, cfg)
        ref_logits, ref_records = model(x)
    assert logits.dtype == torch.float32
    for name in records:
        assert torch.equal(records[name], ref_records[name]), name
    torch.testing.assert_close(logits, ref_logits)


@pytest.mark.parametrize("shape", [CIFAR, MNIST], ids=["cifar", "mnist"])
def test_static_input_equals_repeated_input(shape):
    cfg = SNNSettings(input_shape=shape, channels=(2, 4), num_steps=4)
    params = params_of(active_snn(cfg))
    images = random_images(shape, batch=3)
    with torch.no_grad():
        repeated = snn_functional_forward(params, encode("repeat", images, 4), cfg)
        static = snn_functional_forward(params, images, cfg, static_input=True)
    assert_same_outputs(static, repeated)


def test_vmap_over_stacked_parameters_equals_separate_calls():
    cfg = SNNSettings(input_shape=MNIST, channels=(2, 4), num_steps=4, readout="spike_count")
    members = [params_of(active_snn(cfg, seed=s)) for s in range(3)]
    stacked = {name: torch.stack([m[name] for m in members]) for name in members[0]}
    x = encode("poisson", random_images(MNIST), 4, generator_from(9))
    with torch.no_grad():
        batched = torch.func.vmap(lambda p: snn_functional_forward(p, x, cfg))(stacked)
        for i, params in enumerate(members):
            member = (batched[0][i], {k: v[i] for k, v in batched[1].items()})
            assert_same_outputs(member, snn_functional_forward(params, x, cfg))


def test_vmap_with_static_input_and_per_member_inputs():
    cfg = SNNSettings(input_shape=MNIST, channels=(2, 4), num_steps=3)
    members = [params_of(active_snn(cfg, seed=s)) for s in range(2)]
    stacked = {name: torch.stack([m[name] for m in members]) for name in members[0]}
    images = torch.stack([random_images(MNIST, seed=s) for s in range(2)])
    forward = lambda p, x: snn_functional_forward(p, x, cfg, static_input=True)  # noqa: E731
    with torch.no_grad():
        logits, _ = torch.func.vmap(forward)(stacked, images)
        for i in range(2):
            torch.testing.assert_close(logits[i], forward(members[i], images[i])[0])


@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid"])
def test_functional_surrogate_gradient_equals_snntorch_bptt(surrogate):
    cfg = SNNSettings(
        input_shape=MNIST, channels=(2, 4), num_steps=4, surrogate=surrogate, readout="spike_count"
    )
    model = active_snn(cfg)
    x = encode("poisson", random_images(MNIST), 4, generator_from(4))
    labels = torch.tensor([1, 7])
    loss = torch.nn.functional.cross_entropy(model(x)[0], labels)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    params = dict(model.named_parameters())
    loss = torch.nn.functional.cross_entropy(snn_functional_forward(params, x, cfg)[0], labels)
    got = torch.autograd.grad(loss, list(params.values()))
    for g, e in zip(got, expected):
        # snnTorch's spikes are float32 even in a float64 model, so its gradients pass
        # through float32: agreement to float32 precision is all there is to check.
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * float(e.abs().max()))
    assert any(g.abs().sum() > 0 for g in got)


def test_snn_forward_is_stateless_and_copyable():
    cfg = SNNSettings(input_shape=MNIST, channels=(2, 4), num_steps=3)
    model = active_snn(cfg)
    x = encode("deterministic", random_images(MNIST), 3)
    first = model(x)
    assert_same_outputs(model(x), first)  # no membrane carried over between calls
    assert_same_outputs(copy.deepcopy(model)(x), first)
    with torch.no_grad():
        assert_same_outputs(snn_functional_forward(params_of(model), x, cfg), first)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch):
    """No C++ compiler or an unsupported platform: the fused path still runs, eagerly."""
    from snn_es import lif

    def broken_compile(fn, **_):
        def run(*args):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setenv("SNN_ES_COMPILE", "1")
    monkeypatch.setattr(lif, "_COMPILED", {})
    monkeypatch.setattr(lif.torch, "compile", broken_compile)
    conv_out = torch.randn(4 * 3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    cfg = SNNSettings(input_shape=(1, 6, 6), channels=(2,), num_steps=4)
    expected = lif.pool_lif(conv_out, cfg, static=False, fused=False)
    with pytest.warns(RuntimeWarning, match="torch.compile of _pool_lif failed"):
        first = lif.pool_lif(conv_out, cfg, static=False, fused=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback is remembered: no second warning
        second = lif.pool_lif(conv_out, cfg, static=False, fused=True)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert expected.shape == (4, 3, 2, 3, 3) and 0 < float(expected.mean()) < 1
