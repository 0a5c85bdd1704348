"""The config schema and cross-checks: each bad case is one line naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO
from snn_es.config import ConfigError, check_config

DEFAULT_GRID = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["es_grid"]

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_is_valid(default_config):
    checked = check_config(copy.deepcopy(default_config), SCHEMA)
    assert checked["enabled_datasets"] == ["cifar10", "mnist"]
    assert checked["datasets"]["cifar10"]["train_split"] == "train"  # schema default filled


@pytest.mark.parametrize(
    "edit,key,problem",
    [
        (lambda c: c.update(sedd=1), "config", "'sedd' was unexpected"),
        (lambda c: c["subsets"]["small"].update(trian=5), "config.subsets.small", "'trian'"),
        (lambda c: c.update(seed="abc"), "config.seed", "not of type 'integer'"),
        (lambda c: c["subsets"]["small"].update(train=-3), "config.subsets.small.train",
         "minimum of 1"),
        (lambda c: c["subsets"]["big"].update(test=0), "config.subsets.big.test", "minimum of 1"),
        (lambda c: c["subsets"]["big"].update(train=50001), "config.subsets.big.train",
         "larger than the train split of dataset 'cifar10'"),
        (lambda c: c.update(encoders=["poisson", "gaussian"]), "config.encoders.1",
         "'gaussian' is not one of"),
        (lambda c: c.update(enabled_datasets=["cifar10", "svhn"]), "config.enabled_datasets.1",
         "unknown dataset 'svhn'"),
        (lambda c: c["datasets"]["mnist"].pop("hub_id"), "config.datasets.mnist",
         "'hub_id' is a required property"),
        (lambda c: c["datasets"].update({"Bad Name": c["datasets"]["mnist"]}), "config.datasets",
         "does not match"),
        (lambda c: c["es_grid"][0].update(subsets=["small", "huge"]), "config.es_grid.0.subsets.1",
         "'huge' is not one of the enabled subsets"),
        (lambda c: c["es_grid"][1].update(encoders=["rate"]), "config.es_grid.1.encoders.0",
         "'rate' is not one of"),
        (lambda c: c["es"].update(population=33), "config.es.population", "multiple of 2"),
        (lambda c: c["es_grid"][1].update(es={"lr": -1}), "config.es_grid.1.es.lr",
         "less than or equal to the minimum of 0"),
        (lambda c: c["es_grid"][1].update(es={"lrr": 1}), "config.es_grid.1.es",
         "'lrr' was unexpected"),
        (lambda c: c["es_grid"].append(dict(c["es_grid"][1])),
         f"config.es_grid.{len(DEFAULT_GRID)}", "is also in config.es_grid.1"),
        (lambda c: c["snn"].update(reset_mechanism="hard"), "config.snn.reset_mechanism",
         "'hard' is not one of"),
        (lambda c: c["snn_overrides"].update(svhn={"channels": [4]}), "config.snn_overrides.svhn",
         "unknown dataset 'svhn'"),
        (lambda c: c["ablation"][0]["variants"].update(bad={"es": {"rank": -1}}),
         "config.ablation.0.variants.bad.es.rank", "less than the minimum of 0"),
        (lambda c: c["ablation"][1]["variants"].update(bad={"snn": {"readout": "rate"}}),
         "config.ablation.1.variants.bad.snn.readout", "'rate' is not one of"),
        (lambda c: c["ablation"][0]["variants"].update({"a b": {}}),
         "config.ablation.0.variants", "does not match"),
        (lambda c: c["ablation"][0].update(subset="huge"), "config.ablation.0.subset",
         "'huge' is not one of the enabled subsets"),
        (lambda c: c["ablation"][1].update(study=c["ablation"][0]["study"]),
         "config.ablation.1.study", "is used twice"),
        (lambda c: c["es"].update(fitness="reward"), "config.es.fitness", "'reward' is not one of"),
    ],
)
def test_bad_configs_are_rejected_in_one_line(default_config, edit, key, problem):
    edit(default_config)
    with pytest.raises(ConfigError) as err:
        check_config(default_config, SCHEMA)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: ")
    assert problem in message


def test_every_schema_key_is_described():
    schema = yaml.safe_load(SCHEMA.read_text())

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            assert "description" in sub or "$ref" in sub, f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{path}.*")

    walk(schema, "config")


def test_full_config_is_valid_over_the_defaults(default_config):
    from snakemake.utils import update_config

    full = yaml.safe_load((REPO / "config" / "full.yaml").read_text())
    update_config(default_config, full)  # what --configfile does
    checked = check_config(default_config, SCHEMA)
    assert checked["subsets"]["full"] == {"train": 50000, "test": 10000}
    assert checked["es"]["population"] == 256


def test_smoke_config_is_complete_and_valid_on_its_own():
    """config/smoke.yaml is used without config.yaml (README: --directory elsewhere), so it
    must be a complete config, and it must define every study that `studies` builds."""
    from snn_es.config import expand_runs

    smoke = check_config(yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()), SCHEMA)
    runs = expand_runs(smoke)
    kinds = {run.split("/")[0] for run in runs}
    assert kinds == {"es", "ablation", "scaling"}
    assert smoke["diagnostics"]["grid"] and list(smoke["subsets"]) == ["tiny"]


def test_scaling_cells_may_change_es_and_budgets(default_config):
    """A scaling curve can carry its own `es` changes (before the allocation's) and budgets."""
    from snn_es.config import scaling_runs

    default_config["scaling"] = {
        "cells": [{"dataset": "mnist", "encoder": "repeat", "es": {"sigma": 0.05},
                   "budgets": [8192]},
                  {"dataset": "cifar10", "encoder": "repeat"}],
        "allocations": {"p64_b128": {"population": 64, "batch_size": 128}},
        "budgets": [16384], "seeds": [0], "subset": "big"}
    runs = scaling_runs(check_config(default_config, SCHEMA))
    assert sorted(runs) == ["scaling/cifar10/repeat/p64_b128/e16384/seed0",
                            "scaling/mnist/repeat/p64_b128/e8192/seed0"]
    mnist = runs["scaling/mnist/repeat/p64_b128/e8192/seed0"]["es"]
    assert (mnist["sigma"], mnist["generations"]) == (0.05, 1)
    assert runs["scaling/cifar10/repeat/p64_b128/e16384/seed0"]["es"]["sigma"] == 0.02
    default_config["scaling"]["cells"][0]["budgets"] = [100]
    with pytest.raises(ConfigError, match="100 is not a positive multiple"):
        check_config(default_config, SCHEMA)


def test_scaling_cells_may_pick_allocations(default_config):
    """A curve may run some of the section's allocations only; an unknown name is an error."""
    from snn_es.config import scaling_runs

    default_config["scaling"] = {
        "cells": [{"dataset": "cifar10", "encoder": "repeat"},
                  {"dataset": "cifar10", "encoder": "repeat", "allocations": ["p256_b128"],
                   "budgets": [65536]}],
        "allocations": {"p64_b128": {"population": 64, "batch_size": 128},
                        "p256_b128": {"population": 256, "batch_size": 128}},
        "budgets": [32768], "seeds": [0], "subset": "big"}
    runs = scaling_runs(check_config(default_config, SCHEMA))
    assert sorted(runs) == ["scaling/cifar10/repeat/p256_b128/e32768/seed0",
                            "scaling/cifar10/repeat/p256_b128/e65536/seed0",
                            "scaling/cifar10/repeat/p64_b128/e32768/seed0"]
    assert runs["scaling/cifar10/repeat/p256_b128/e65536/seed0"]["es"]["generations"] == 2
    default_config["scaling"]["cells"][1]["allocations"] = ["p1024"]
    with pytest.raises(ConfigError, match=r"\['p1024'\] are not among"):
        check_config(default_config, SCHEMA)


def test_scaling_cells_may_carry_their_own_seeds(default_config):
    """More seeds for some points only (the best ones), without repeating the costly ones;
    a point that two cells both list is an error, not a silent overwrite."""
    from snn_es.config import scaling_runs

    default_config["scaling"] = {
        "cells": [{"dataset": "cifar10", "encoder": "repeat", "budgets": [16384]},
                  {"dataset": "cifar10", "encoder": "repeat", "budgets": [32768],
                   "seeds": [0, 1, 2]}],
        "allocations": {"p64_b128": {"population": 64, "batch_size": 128}},
        "budgets": [16384], "seeds": [0], "subset": "big"}
    runs = scaling_runs(check_config(default_config, SCHEMA))
    assert sorted(runs) == ["scaling/cifar10/repeat/p64_b128/e16384/seed0",
                            *(f"scaling/cifar10/repeat/p64_b128/e32768/seed{s}"
                              for s in range(3))]
    assert [runs[f"scaling/cifar10/repeat/p64_b128/e32768/seed{s}"]["seed"]
            for s in range(3)] == [0, 1, 2]
    default_config["scaling"]["cells"][1]["budgets"] = [16384, 32768]
    with pytest.raises(ConfigError, match=r"cells\[1\]: scaling/cifar10/repeat/p64_b128/"
                                          r"e16384/seed0 is already a point"):
        check_config(default_config, SCHEMA)


def test_minibatches_must_fit_in_the_subset(default_config):
    """A minibatch larger than the subset's training images would silently shrink."""
    default_config["es"]["readout_batch_size"] = 4096  # big: 2048 training images
    with pytest.raises(ConfigError, match=r"es\.readout_batch_size 4096 is larger than the "
                                          r"2048 training images of subset 'big'"):
        check_config(default_config, SCHEMA)


@pytest.mark.parametrize("change, message", [
    ({"subset": "huge"}, r"^config\.benchmark\.subset: 'huge' is not one of the subsets "
                         r"\['small', 'big'\] \(null: uniform noise\)$"),
    ({"subset": "small", "batch": 1024},
     r"^config\.benchmark\.batch: 1024 is larger than the 512 training images of subset "
     r"'small'$"),
])
def test_the_benchmark_subset_must_exist_and_hold_its_minibatch(default_config, change,
                                                                 message):
    default_config["benchmark"].update(change)
    with pytest.raises(ConfigError, match=message):
        check_config(default_config, SCHEMA)
    default_config["benchmark"]["subset"] = None  # uniform noise: nothing to check
    check_config(default_config, SCHEMA)
