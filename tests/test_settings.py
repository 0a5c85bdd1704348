"""One definition per setting: the dataclasses, the schema and config.yaml agree, and the
config expands into canonical run specs that do not depend on how the config is written."""

from __future__ import annotations

import copy
import math

import pytest
import yaml

from conftest import REPO, reversed_keys
from snn_es import settings as S
from snn_es.config import GRID_KEYS, ConfigError, check_config, expand_runs, study_labels

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
SECTIONS = {  # config section -> (its schema, its dataclass)
    "snn": (SCHEMA["definitions"]["snn_settings"], S.SNNSettings),
    "es": (SCHEMA["definitions"]["es_settings"], S.ESSettings),
    "execution": (SCHEMA["properties"]["execution"], S.ExecutionSettings),
    "readout_fit": (SCHEMA["properties"]["readout_fit"], S.ReadoutFitSettings),
}
CHOICES = {"reset_mechanism": S.RESET_MECHANISMS, "surrogate": S.SURROGATES,
           "readout": S.READOUTS, "lr_schedule": S.SCHEDULES, "optimizer": S.OPTIMIZERS,
           "noise_scale": S.NOISE_SCALES, "fitness": S.FITNESSES, "spike_noise": S.SPIKE_NOISE,
           "augment": S.AUGMENTS}


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("section", list(SECTIONS))
def test_schema_describes_exactly_the_dataclass_fields(section):
    schema, cls = SECTIONS[section]
    fields = S.config_fields(cls)
    assert list(schema["properties"]) == list(fields)
    assert schema["additionalProperties"] is False
    for name, field in fields.items():
        entry = schema["properties"][name]
        # one description: the schema's (folded YAML) says what the dataclass says
        assert " ".join(entry["description"].split()) == field.metadata["help"], name
        assert "default" not in entry, f"{name}: the default lives in the dataclass only"
        if name in CHOICES:
            assert tuple(entry["enum"]) == CHOICES[name], name


@pytest.mark.parametrize("section", list(SECTIONS))
def test_config_yaml_shows_every_setting_at_its_default(section):
    _, cls = SECTIONS[section]
    assert default_config()[section] == S.defaults(cls)


def test_a_wrong_type_in_a_merged_run_is_one_line_naming_the_entry():
    config = default_config()
    config["es_grid"][0]["es"] = {"population": 7}
    with pytest.raises(ConfigError, match=r"^config\.es_grid\.0\.es\.population: 7 is not a "
                                          r"multiple of 2$"):
        check_config(config, SCHEMA_PATH)


def _specs(config: dict) -> dict:
    return expand_runs(check_config(copy.deepcopy(config), SCHEMA_PATH))


def test_key_order_and_explicit_defaults_do_not_change_any_spec():
    config = default_config()
    specs = _specs(config)
    grid = sum(math.prod(len(entry[k]) for k in GRID_KEYS) for entry in config["es_grid"])
    studies = sum(len(study["variants"]) * len(study["seeds"]) for study in config["ablation"])
    scaling = config["scaling"]
    points = sum(len(cell.get("budgets", scaling["budgets"]))
                 * len(cell.get("allocations", scaling["allocations"]))
                 * len(cell.get("seeds", scaling["seeds"])) for cell in scaling["cells"])
    assert len(specs) == grid + studies + points  # every run, each once
    assert sum(run.startswith("scaling/") for run in specs) == points
    reordered = _specs(reversed_keys(config))
    assert reordered == specs
    assert [repr(reordered[k]) for k in specs] == [repr(specs[k]) for k in specs]
    sparse = copy.deepcopy(config)
    for section in ("snn", "es"):
        sparse[section] = {}  # every key left out: the dataclass defaults
    sparse["es_grid"][1]["es"]["lr"] = 5e-3  # the default, written out in a grid entry
    sparse["es"]["sigma_final"] = None  # a default written out
    assert _specs(sparse) == specs


def test_a_setting_added_later_is_in_a_spec_only_away_from_its_default():
    # `augment` came after runs were committed: at its default every spec stays as it was
    assert "augment" not in S.canonical(S.ESSettings())
    assert S.canonical(S.ESSettings(augment="flip"))["augment"] == "flip"
    specs = _specs(default_config())
    augmented = {key for key in specs if "_flip/" in key or "_flip_translate/" in key}
    assert augmented  # the scaling cells that set it (else the check below can't fail)
    assert all(("augment" in spec["es"]) == (key in augmented) for key, spec in specs.items())


def test_one_merge_for_every_run():
    config = default_config()
    config["es"]["lr"] = 1  # an int for a float setting: the same as 1.0
    config["es_grid"][1]["es"]["lr"] = 0.02
    specs = _specs(config)
    poisson = specs["es/cifar10/poisson/big/flip_delta/seed0"]
    grid_generations = config["es_grid"][1]["es"]["generations"]
    assert grid_generations != config["es"]["generations"]  # else the check below can't fail
    assert poisson["es"]["generations"] == grid_generations  # the grid entry's change wins
    assert poisson["es"]["lr"] == 0.02  # the grid entry's lr wins over the section's
    mnist = specs["es/mnist/repeat/big/flip_delta/seed0"]
    cifar = specs["es/cifar10/repeat/big/flip_delta/seed2"]
    assert cifar["es"]["lr"] == 1.0 and isinstance(cifar["es"]["lr"], float)
    assert mnist["snn"]["channels"] == [8, 16]  # the dataset's override
    assert list(mnist) == sorted(mnist) and list(mnist["es"]) == sorted(mnist["es"])
    # a study: defaults <- es <- base <- variant; snn <- overrides <- base <- variant
    variant = specs["ablation/mnist_repeat/weight_decay0.05/seed1"]
    assert variant["es"]["weight_decay"] == 0.05 and variant["snn"]["channels"] == [8, 16]
    assert variant["es"]["lr"] == 0.02 and variant["snn"]["num_steps"] == 4  # the base
    assert variant["mode"] == "chunked" and variant["encoder"] == "repeat"
    assert variant["seed"] == 1
    pop = specs["ablation/cifar10_repeat/pop256_gens75/seed0"]["es"]
    assert (pop["population"], pop["generations"], pop["batch_size"]) == (256, 75, 128)
    assert study_labels(config)["ablation/mnist_repeat/weight_decay0.05/seed1"] == {
        "changes": {"es": {"weight_decay": 0.05}}, "seed": 1, "study": "mnist_repeat",
        "variant": "weight_decay0.05"}
    for spec in specs.values():  # speed settings never enter a spec
        assert not {"chunk_size", "fused", "checkpoint_every"} & set(spec["es"])
