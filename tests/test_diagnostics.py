"""ES gradient diagnostics: statistics, reference gradients, fitness noise, the sweep, the
aggregated table and plot, and the Snakemake rules on a tiny config.

Real components on a tiny SNN (one conv layer of 2 channels, 8x8 grayscale, 3 classes,
119 parameters), float64, single-threaded; each test takes about a second.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, planned_jobs, run_snakemake, tiny_config

from snn_es.config import ConfigError, check_config
from snn_es.diagnostics_report import diagnostics_table, plot_diagnostics
from snn_es.encoders import encode
from snn_es.es.diagnostics import (
    COLUMNS,
    DiagnosticsError,
    DiagnosticSettings,
    bptt_gradient,
    diagnose,
    es_minibatch,
    evaluate_members,
    fitness_noise,
    make_strategy,
    mean_pairwise_cosine,
    rows_to_csv,
    snr,
    snr_debiased,
    snr_noise_floor,
)
from snn_es.es.evaluate import PopulationTask, evaluate_population
from snn_es.es.run import initial_theta
from snn_es.settings import ESSettings
from snn_es.models import SNNSettings, make_snn
from snn_es.seeding import generator_from, seed_from

CFG = SNNSettings(input_shape=(1, 8, 8), num_classes=3, channels=(2,), num_steps=4,
                threshold=0.5)
SMALL = DiagnosticSettings(sigmas=(0.01, 0.1), populations=(8, 256), estimates=4,
                           batch_size=16, reference_batch=64, noise_samples=4)
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"



def start(seed: int):
    """An ES run's starting point, in float64 (convs at their snnTorch init, as the oracle
    module below is built)."""
    theta, layout = initial_theta(CFG, ESSettings(init_conv_scale=1.0), seed)
    return theta.double(), layout

def tiny_subset(num: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = generator_from(seed, "diagnostics-test")
    return {"train_images": torch.randint(0, 256, (num, 1, 8, 8), generator=gen,
                                          dtype=torch.uint8),
            "train_labels": torch.randint(0, 3, (num,), generator=gen)}


def run(encoder="repeat", seed=0, settings=SMALL, subset=None):
    subset = tiny_subset(seed=seed) if subset is None else subset
    return diagnose(subset, CFG, encoder, seed, settings, dtype=torch.float64, log=None)


def untimed(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def by_setting(rows):
    return {(r["rank"], r["sigma"], r["population"]): r for r in rows}


# --- statistics ----------------------------------------------------------------------------


def test_snr_of_pure_noise_and_of_a_noisy_signal():
    gen = generator_from(0, "snr-test")
    dim, k = 20000, 4
    noise = [torch.randn(dim, generator=gen, dtype=torch.float64) for _ in range(k)]
    # pure noise: the naive ratio sits at its floor 1/sqrt(K-1), the debiased one near 0
    assert snr(noise) == pytest.approx(1 / math.sqrt(k - 1), rel=0.05)
    assert snr_debiased(noise) < 3 * snr_noise_floor(dim, k) < 0.2
    assert abs(mean_pairwise_cosine(noise)) < 0.05
    # signal of norm 2 * ||noise||: per-estimate SNR 2, pairwise cosine 4 / 5
    signal = torch.randn(dim, generator=gen, dtype=torch.float64)
    signal *= 2 * math.sqrt(dim) / signal.norm()
    noisy = [signal + n for n in noise]
    assert snr_debiased(noisy) == pytest.approx(2.0, rel=0.05)
    assert mean_pairwise_cosine(noisy) == pytest.approx(0.8, abs=0.03)
    assert snr(noisy) > snr_debiased(noisy)  # the naive ratio keeps 1/K of the noise


# --- reference gradient --------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["repeat", "poisson"])
def test_bptt_gradient_is_the_snntorch_module_gradient(encoder):
    theta, layout = start(3)
    task = PopulationTask(CFG, layout, encoder, seed=3)
    images, labels = es_minibatch(tiny_subset()["train_images"], tiny_subset()["train_labels"],
                                  3, 0, 8, torch.float64)
    inputs = task.inputs(images, 0, None)
    grad = bptt_gradient(theta, task, inputs, labels)

    model = make_snn(CFG, seed_from(3, "init")).double()
    sequence = encode(encoder, images, CFG.num_steps) if encoder == "repeat" else inputs
    logits, _ = model(sequence)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    module_grad = layout.flatten({n: p.grad for n, p in model.named_parameters()})
    assert grad.abs().max() > 1e-3  # the surrogate gradient is not trivially zero
    torch.testing.assert_close(grad, -module_grad)  # ascent direction of -CE


# --- fitness evaluation and noise ----------------------------------------------------------


@pytest.mark.parametrize("encoder", ["repeat", "poisson"])
def test_fixed_input_members_are_es_generation_zero(encoder):
    """Estimate 0 scores exactly the members, minibatch and spikes of ES generation 0."""
    subset = tiny_subset()
    theta, layout = start(1)
    task = PopulationTask(CFG, layout, encoder, seed=1)
    strategy = make_strategy(theta, layout, ESSettings(), 6, 0.05, 0, seed=1, generations=1)
    images, labels = es_minibatch(subset["train_images"], subset["train_labels"], 1, 0, 16,
                                  torch.float64)
    fitness, elapsed = evaluate_members(strategy, 0, 6, task, task.inputs(images, 0, None),
                                        labels)
    expected, _ = evaluate_population("sequential", strategy, 0, images, labels, task)
    torch.testing.assert_close(fitness, expected.double())
    assert len(elapsed) == 6 and elapsed == sorted(elapsed)


def test_fitness_noise_is_zero_across_spikes_only_for_deterministic_encoders():
    subset = tiny_subset()
    noise = {}
    for encoder in ("repeat", "deterministic", "poisson"):
        theta, layout = start(0)
        task = PopulationTask(CFG, layout, encoder, seed=0)
        noise[encoder] = fitness_noise(theta, task, subset["train_images"],
                                       subset["train_labels"], 0, 16, 4)
    assert noise["repeat"]["fitness_std_spikes"] == 0.0
    assert noise["deterministic"]["fitness_std_spikes"] == 0.0
    assert noise["poisson"]["fitness_std_spikes"] > 1e-4
    for values in noise.values():
        assert values["fitness_std_minibatch"] > 1e-4  # different images, different loss


# --- the sweep -----------------------------------------------------------------------------


def test_diagnostics_are_deterministic_and_depend_on_the_seed():
    settings = dataclasses.replace(SMALL, populations=(8, 32))
    first, again = run(seed=0, settings=settings), run(seed=0, settings=settings)
    other = run(seed=1, settings=settings)
    assert untimed(first) == untimed(again)
    assert untimed(first) != untimed(other)
    assert [tuple(r) for r in first] == [tuple(first[0])] * len(first)
    assert set(first[0]) == set(COLUMNS) - {"dataset", "subset"}
    assert [(r["sigma"], r["population"]) for r in first] == [
        (0.01, 8), (0.01, 32), (0.1, 8), (0.1, 32)]


@pytest.mark.parametrize("encoder", ["repeat", "poisson"])
def test_more_members_give_better_aligned_less_noisy_estimates(encoder):
    rows = by_setting(run(encoder))
    dim = rows[(0, 0.01, 8)]["num_params"]
    for sigma in SMALL.sigmas:
        few, many = rows[(0, sigma, 8)], rows[(0, sigma, 256)]
        assert many["snr_debiased"] > few["snr_debiased"] + 0.4
        assert many["pairwise_cosine"] > few["pairwise_cosine"] + 0.2
        assert many["cosine_bptt_mean"] > 0.3 > few["cosine_bptt_mean"]
        assert many["member_evals"] == 256 * SMALL.estimates
        for row in (few, many):
            # The linear-fitness reference is close to the theory for N antithetic pairs in
            # D dimensions, cos ~ sqrt(N / (N + D)) (rank shaping loses a little).
            pairs = row["population"] // 2
            assert row["cosine_linear_mean"] == pytest.approx(
                math.sqrt(pairs / (pairs + dim)), abs=0.1)
            assert row["snr"] > row["snr_debiased"]


def test_small_populations_reuse_the_members_of_the_largest():
    alone = run(settings=dataclasses.replace(SMALL, populations=(8,)))
    nested = [r for r in run() if r["population"] == 8]
    assert untimed(alone) == untimed(nested)


def test_low_rank_settings_are_diagnosed_separately():
    settings = dataclasses.replace(SMALL, ranks=(0, 2), sigmas=(0.05,), populations=(8, 32))
    rows = by_setting(run(settings=settings))
    assert set(rows) == {(r, 0.05, p) for r in (0, 2) for p in (8, 32)}
    assert rows[(2, 0.05, 8)]["cosine_bptt_mean"] != rows[(0, 0.05, 8)]["cosine_bptt_mean"]


def test_settings_larger_than_the_subset_are_rejected():
    with pytest.raises(DiagnosticsError, match="reference_batch 512"):
        run(settings=dataclasses.replace(SMALL, reference_batch=512))


# --- table and plot ------------------------------------------------------------------------


def test_table_and_plot_from_per_job_files(tmp_path):
    paths = []
    for encoder in ("poisson", "repeat"):
        rows = run(encoder, settings=dataclasses.replace(SMALL, populations=(8, 32)))
        for row in rows:
            row.update(dataset="tiny", subset="big")
        path = tmp_path / encoder / "diagnostics.csv"
        path.parent.mkdir()
        path.write_text(rows_to_csv(rows))
        paths.append(path)
    table = diagnostics_table(reversed(paths))
    assert list(table.columns) == list(COLUMNS)
    assert list(table["encoder"]) == ["poisson"] * 4 + ["repeat"] * 4  # sorted by setting
    assert table.equals(pd.concat([pd.read_csv(p) for p in paths], ignore_index=True))
    plot = tmp_path / "diagnostics.png"
    plot_diagnostics(table, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- config ------------------------------------------------------------------------------


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    "edit,key,problem",
    [
        (lambda d: d.update(subset="huge"), "config.diagnostics.subset", "'huge' is not one"),
        (lambda d: d["grid"][1].update(datasets=["svhn"]), "config.diagnostics.grid.1.datasets.0",
         "not one of the enabled datasets"),
        (lambda d: d.update(reference_batch=4096), "config.diagnostics.reference_batch",
         "larger than the 2048 training images"),
        (lambda d: d.update(populations=[8, 33]), "config.diagnostics.populations.1",
         "multiple of 2"),
        (lambda d: d.update(estimates=1), "config.diagnostics.estimates", "minimum of 2"),
        (lambda d: d.update(sigma=[0.1]), "config.diagnostics", "'sigma' was unexpected"),
    ],
)
def test_bad_diagnostics_config_is_rejected_in_one_line(default_config, edit, key, problem):
    edit(default_config["diagnostics"])
    with pytest.raises(ConfigError) as err:
        check_config(default_config, SCHEMA)
    assert str(err.value).startswith(f"{key}: ") and problem in str(err.value)


def test_default_diagnostics_config_matches_the_library_settings(default_config):
    section = check_config(copy.deepcopy(default_config), SCHEMA)["diagnostics"]
    settings = DiagnosticSettings.from_config(section)
    assert settings.populations == tuple(section["populations"])
    assert settings.ranks == (0,)


# --- the rules -----------------------------------------------------------------------------


@pytest.mark.slow
def test_rules_build_the_table_and_plot_as_a_study_outside_all(tmp_path, tiny_mirror):
    config = tiny_config(tiny_mirror)
    config["diagnostics"] = {
        "grid": [{"datasets": ["tinygray"], "encoders": ["repeat", "poisson"]}],
        "subset": "big", "sigmas": [0.02, 0.1], "populations": [4, 8], "estimates": 2,
        "batch_size": 8, "reference_batch": 16, "noise_samples": 2,
    }
    assert "diagnose_es" not in planned_jobs(run_snakemake(tmp_path, config, "all", "--dry-run"))
    dry = planned_jobs(run_snakemake(tmp_path, config, "diagnostics_all", "--dry-run"))
    assert dry["diagnose_es"] == 2 and dry["aggregate_diagnostics"] == 1
    run_snakemake(tmp_path, config, "diagnostics_all")
    table = pd.read_csv(tmp_path / "results/tables/es_diagnostics.csv")
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2 * 2 * 2  # encoders x sigmas x populations
    assert (tmp_path / "results/plots/es_diagnostics.png").exists()
    assert (tmp_path / "logs/diagnose_es/tinygray/poisson.log").exists()
