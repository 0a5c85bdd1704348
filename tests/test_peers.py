"""The side-by-side with EvoTorch (snn_es.peers, config section `peers`, target `peers`):
EvoTorch's SNES and PGPE on exactly the problem of a project ES run, the config section, and
the Snakemake plan."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import yaml

from conftest import REPO, planned_jobs, reversed_keys, run_snakemake, tiny_config
from snn_es.config import ConfigError, check_config, peer_runs
from snn_es.errors import UserError
from snn_es.es.run import initial_theta, run_es
from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
POPULATION, BATCH, GENERATIONS = 4, 16, 2
CFG = SNNSettings(input_shape=(3, 8, 8), num_classes=3, channels=(4,), num_steps=2)
ES = ESSettings(generations=GENERATIONS, population=POPULATION, batch_size=BATCH,
                eval_every=1)
EXECUTION = ExecutionSettings(chunk_size=3, image_chunk=5, fused=False)  # ragged pieces


def tiny_subset(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "train_images": torch.randint(0, 256, (64, 3, 8, 8), generator=gen, dtype=torch.uint8),
        "train_labels": torch.arange(64) % 3,
        "test_images": torch.randint(0, 256, (32, 3, 8, 8), generator=gen, dtype=torch.uint8),
        "test_labels": torch.arange(32) % 3,
        "classes": ["a", "b", "c"],
    }


def _results(rows):
    """The rows without the clock."""
    return [{k: v for k, v in row.items() if k not in ("wall_s", "member_evals_per_s")}
            for row in rows]


@pytest.mark.parametrize("implementation", ["evotorch_snes", "evotorch_pgpe"])
@pytest.mark.parametrize("encoder", ["repeat", "poisson"])
def test_evotorch_runs_log_the_budget_and_reproduce(implementation, encoder):
    pytest.importorskip("evotorch")
    from snn_es.peers import LOG_COLUMNS, run_peer

    subset = tiny_subset()

    def run(seed=0):
        return run_peer(subset, CFG, ES, encoder, seed, implementation, execution=EXECUTION,
                        progress=False)

    metrics, rows, theta = run()
    assert [list(row) for row in rows] == [list(LOG_COLUMNS)] * GENERATIONS
    assert [row["generation"] for row in rows] == list(range(GENERATIONS))
    per_generation = POPULATION * BATCH
    assert [row["member_sample_evaluations"] for row in rows] == [
        per_generation * (g + 1) for g in range(GENERATIONS)]
    assert metrics["member_sample_evaluations"] == GENERATIONS * POPULATION * BATCH
    assert metrics["evaluations"] == GENERATIONS * POPULATION
    assert all(row["test_acc"] is not None for row in rows)  # eval_every 1
    assert metrics["final_test_acc"] == rows[-1]["test_acc"]
    assert metrics["best_test_acc"] == max(row["test_acc"] for row in rows)
    assert 0 <= metrics["final_train_acc"] <= 1 and metrics["member_evals_per_s"] > 0
    assert metrics["num_params"] == theta.numel()
    # EvoTorch moved the centre away from the project's initial weights
    start, _ = initial_theta(CFG, ES, 0)
    assert not torch.equal(theta, start)

    again_metrics, again_rows, again_theta = run()  # the same seed: the same run
    assert _results(again_rows) == _results(rows)
    assert torch.equal(again_theta, theta)
    assert again_metrics["final_train_acc"] == metrics["final_train_acc"]
    _, other_rows, other_theta = run(seed=1)  # another seed: another run
    assert not torch.equal(other_theta, theta)
    assert other_rows[0]["fitness_mean"] != rows[0]["fitness_mean"]


def test_evotorch_starts_from_the_projects_weights_and_minibatch(tmp_path):
    """With a vanishing perturbation scale every member is the centre, so the mean fitness
    of generation 0 is the centre's fitness on generation 0's minibatch and spikes: EvoTorch
    and the project's run_es must agree on it (and differ from another seed's)."""
    pytest.importorskip("evotorch")
    from snn_es.peers import GenerationData, make_problem, make_searcher, run_peer

    subset = tiny_subset()
    one = ESSettings(generations=1, population=POPULATION, batch_size=BATCH, eval_every=1,
                     sigma=1e-7, rank=0)
    _, es_rows, _ = run_es(subset, CFG, one, "poisson", 0, "chunked", tmp_path / "ckpt.pt",
                           execution=EXECUTION, progress=False)
    for implementation in ("evotorch_snes", "evotorch_pgpe"):
        _, rows, _ = run_peer(subset, CFG, one, "poisson", 0, implementation,
                              {"stdev_init": 1e-7}, EXECUTION, progress=False)
        assert rows[0]["fitness_mean"] == pytest.approx(es_rows[0]["fitness_mean"], abs=1e-5)
        assert rows[0]["batch_acc"] == es_rows[0]["batch_acc"]
        assert rows[0]["member_sample_evaluations"] == POPULATION * BATCH
    _, other, _ = run_peer(subset, CFG, one, "poisson", 1, "evotorch_snes",
                           {"stdev_init": 1e-7}, EXECUTION, progress=False)
    assert other[0]["fitness_mean"] != pytest.approx(es_rows[0]["fitness_mean"], abs=1e-5)

    # and the search distribution's centre starts exactly at initial_theta
    from snn_es.es.evaluate import PopulationTask

    theta, layout = initial_theta(CFG, ES, 0)
    task = PopulationTask(CFG, layout, "repeat", 0)
    problem = make_problem(GenerationData(subset, task, BATCH), EXECUTION, layout.size, 0)
    for implementation in ("evotorch_snes", "evotorch_pgpe"):
        searcher = make_searcher(implementation, problem, theta, POPULATION,
                                 {"stdev_init": 0.02, "center_learning_rate": 0.01,
                                  "stdev_learning_rate": 0.1, "optimizer": "clipup",
                                  "max_speed": None})
        assert torch.equal(searcher.status["center"].as_subclass(torch.Tensor), theta)


def test_without_evotorch_a_peer_run_is_one_clear_line(monkeypatch):
    from snn_es.peers import run_peer

    monkeypatch.setitem(sys.modules, "evotorch", None)  # what `import` sees without the group
    with pytest.raises(UserError, match=r"^EvoTorch is not installed.*uv sync --group peers"):
        run_peer(tiny_subset(), CFG, ES, "repeat", 0, "evotorch_snes", progress=False)


# --------------------------------------------------------------------------------------
# The config section and the Snakemake plan
# --------------------------------------------------------------------------------------


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _checked(config: dict) -> dict:
    return check_config(copy.deepcopy(config), SCHEMA_PATH)


def test_the_peers_section_validates_and_gives_every_implementation_the_same_budget():
    config = _checked(default_config())
    runs = peer_runs(config)
    seeds = config["peers"]["seeds"]
    assert len(seeds) >= 3  # headline numbers are seed means
    assert sorted(runs) == sorted(f"peers/{impl}/seed{seed}" for seed in seeds
                                  for impl in ("snn_es", "snn_es_chunked", "evotorch_snes",
                                               "evotorch_pgpe"))
    for run, spec in runs.items():
        es = spec["es"]
        assert es["generations"] * es["population"] * es["batch_size"] == 300 * 64 * 128, run
        assert (spec["dataset"], spec["encoder"], spec["subset"]) == ("cifar10", "repeat", "big")
        assert spec["snn"]["num_steps"] == 4 and spec["snn"]["channels"] == [16, 32]
        assert es["eval_every"] == 25
    own = runs["peers/snn_es/seed0"]
    # the project's row is the default strategy (top-level `es`) at the shared budget, with
    # the evaluator of the default grid's headline cells
    grid_modes = {mode for entry in config["es_grid"] if "big" in entry["subsets"]
                  for mode in entry["modes"]}
    assert grid_modes == {own["mode"]} == {"flip_delta"}
    assert own["es"]["sigma"] == config["es"]["sigma"]
    # the chunked row: the same strategy and problem, only the evaluator differs
    assert runs["peers/snn_es_chunked/seed0"] == {**own, "implementation": "snn_es_chunked",
                                                  "mode": "chunked"}
    assert runs["peers/evotorch_snes/seed1"]["evotorch"] == {"stdev_init": 0.02}
    assert "sigma" not in runs["peers/evotorch_pgpe/seed0"]["es"]  # not EvoTorch's setting
    # key order does not matter; the section's defaults are EvoTorch's block in the config
    assert peer_runs(_checked(reversed_keys(default_config()))) == runs
    sparse = default_config()
    del sparse["peers"]["evotorch"]
    assert peer_runs(_checked(sparse)) == runs


def test_schema_defaults_match_the_library_defaults():
    pytest.importorskip("evotorch")  # only to keep this file's imports uniform
    from snn_es.peers import DEFAULT_EVOTORCH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    blocks = schema["properties"]["peers"]["properties"]["evotorch"]["properties"]
    assert {name: {k: v["default"] for k, v in block["properties"].items()}
            for name, block in blocks.items()} == DEFAULT_EVOTORCH


@pytest.mark.parametrize("change, message", [
    ({"implementations": ["snn_es", "evotorch_cmaes"]},
     r"^config\.peers\.implementations\.1: 'evotorch_cmaes' is not one of \['snn_es', "
     r"'snn_es_chunked', 'evotorch_snes', 'evotorch_pgpe'\]$"),
    ({"subset": "huge"}, r"^config\.peers\.subset: 'huge' is not one of the enabled subsets"),
    ({"es": {"batch_size": 4096}},
     r"^config\.peers\.es\.batch_size: 4096 is larger than the 2048 training images"),
    ({"evotorch": {"pgpe": {"optimizer": "rmsprop"}}},
     r"^config\.peers\.evotorch\.pgpe\.optimizer: 'rmsprop' is not one of"),
    ({"speed": {"generations": 1, "rounds": 3}},
     r"^config\.peers\.speed\.generations: 1 is less than the minimum of 2"),
])
def test_a_bad_peers_value_is_one_line_naming_the_key(change, message):
    config = default_config()
    config["peers"].update(change)
    with pytest.raises(ConfigError, match=message) as error:
        _checked(config)
    assert "\n" not in str(error.value)


def test_snakemake_plans_the_peers_target_outside_all(tmp_path, tiny_mirror):
    config = tiny_config(tiny_mirror)
    config["peers"] = {"dataset": "tinyrgb", "encoder": "repeat", "subset": "small",
                       "seeds": [0, 1], "es": {"batch_size": 8},
                       "implementations": ["snn_es", "evotorch_snes", "evotorch_pgpe"],
                       "speed": {"generations": 3, "rounds": 1}}
    proc = run_snakemake(tmp_path, config, "peers", "--dry-run")
    assert planned_jobs(proc) == {"cache_dataset": 1, "materialize_subset": 1, "run_peer": 6,
                                  "aggregate_peers": 1, "benchmark_peers": 1, "peers": 1}
    assert "results/tables/es_peers_speed.csv" in proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    for impl in ("snn_es", "evotorch_snes", "evotorch_pgpe"):
        for seed in (0, 1):
            assert f"results/peers/{impl}/seed{seed}/metrics.json" in text
    assert "results/tables/es_peers.csv" in text and "results/plots/es_peers.png" in text
    planned_all = planned_jobs(run_snakemake(tmp_path, config, "all", "--dry-run"))
    assert "run_peer" not in planned_all and "aggregate_peers" not in planned_all


def test_the_projects_row_reads_the_run_with_its_settings(tmp_path, tiny_mirror):
    """A project row whose settings are exactly a grid cell's or scaling point's is that
    run (it would be bit-identical), so the side-by-side does not repeat it; other seeds get
    their own job. A study's base with the same settings is no such run: it reads one too."""
    from snn_es.config import expand_runs, reusable_runs, same_es_run

    runs = peer_runs(_checked(default_config()))
    every_run = expand_runs(_checked(default_config()))
    grid = reusable_runs(every_run)
    # the lever study's base has the peers' settings too, so only reusable_runs keeps the
    # peers from reading a study run (which itself reads the scaling point)
    assert same_es_run(runs["peers/snn_es_chunked/seed0"], every_run).startswith("ablation/")
    assert not any(run.startswith("ablation/") for run in grid)
    for seed in (0, 1, 2):  # the default config: the scaling points at the peers' budget
        assert same_es_run(runs[f"peers/snn_es_chunked/seed{seed}"], grid) == \
            f"scaling/cifar10/repeat/p64_b128/e2457600/seed{seed}"
    # the flip_delta row: no grid cell or scaling point runs 2.46M with that evaluator
    assert same_es_run(runs["peers/snn_es/seed0"], grid) is None
    assert same_es_run(runs["peers/evotorch_snes/seed0"], grid) is None
    changed = default_config()
    changed["peers"]["es"]["generations"] = 100
    assert same_es_run(peer_runs(_checked(changed))["peers/snn_es_chunked/seed0"], grid) is None

    config = tiny_config(tiny_mirror)  # its grid has tinygray repeat small chunked, seed 0
    config["peers"] = {"dataset": "tinygray", "encoder": "repeat", "subset": "small",
                       "seeds": [0, 1], "implementations": ["snn_es_chunked", "evotorch_snes"]}
    proc = run_snakemake(tmp_path, config, "peers", "--dry-run")
    text = proc.stdout + proc.stderr
    assert planned_jobs(proc)["run_peer"] == 3  # snn_es_chunked seed 1, SNES seeds 0 and 1
    assert "results/peers/snn_es_chunked/seed0/metrics.json" not in text
    assert "results/es/tinygray/repeat/small/chunked/seed0/metrics.json" in text


def test_the_speed_side_by_side_times_every_implementation_in_the_same_rounds():
    pytest.importorskip("evotorch")
    from dataclasses import asdict

    from snn_es.peers_speed import FULL_GENERATIONS_ONLY, measure_speeds

    specs = {impl: {"implementation": impl, "encoder": "repeat", "seed": 0, "es": asdict(ES)}
             for impl in ("snn_es", "evotorch_snes")}
    frame = measure_speeds(specs, tiny_subset(), CFG, EXECUTION, generations=3, rounds=2,
                           progress=False)
    assert list(frame["implementation"]) == ["snn_es", "evotorch_snes", FULL_GENERATIONS_ONLY]
    assert (frame["generations_timed"] == 2 * (3 - 1)).all()  # first generation of each dropped
    assert (frame["evals_per_s_min"] > 0).all()
    assert ((frame["evals_per_s_min"] <= frame["evals_per_s_median"])
            & (frame["evals_per_s_median"] <= frame["evals_per_s_max"])).all()
    assert frame.set_index("implementation").loc["snn_es", "relative_to_snn_es"] == 1.0
    assert (frame["population"] == POPULATION).all() and (frame["threads"] >= 1).all()
    with pytest.raises(ValueError, match="generations >= 2"):
        measure_speeds(specs, tiny_subset(), CFG, EXECUTION, generations=1, rounds=1)
