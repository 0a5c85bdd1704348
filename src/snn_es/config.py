"""Config checking: the JSON schema first, then the cross-references a schema cannot express.

Every problem becomes one ``ConfigError`` whose message is a single line naming the key and
what is wrong, raised before any job runs.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import yaml

from snn_es.errors import UserError

ENCODERS = ("poisson", "deterministic", "repeat", "latency")
GRID_KEYS = ("datasets", "encoders", "subsets", "modes", "seeds")


class ConfigError(UserError, ValueError):
    """An invalid config. The message is one line: ``config.<key>: <problem>``."""


def _key(path) -> str:
    parts = [str(p) for p in path]
    return "config." + ".".join(parts) if parts else "config"


def _schema_error_line(error) -> str:
    from jsonschema.exceptions import best_match

    error = best_match([error]) if error.context else error
    # For a failed oneOf/anyOf the innermost error names the real problem.
    while error.context:
        error = best_match(error.context)
    return f"{_key(error.absolute_path)}: {error.message}"


def check_config(config: dict[str, Any], schema_path: str | os.PathLike) -> dict[str, Any]:
    """Validate ``config`` in place (filling schema defaults) and return it."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(schema_path), set_default=True)
    except WorkflowError as exc:
        # Snakemake flattens the jsonschema error into a long text that dumps the schema;
        # validate again with jsonschema itself to get the structured error for one line.
        with open(schema_path) as handle:
            schema = yaml.safe_load(handle)
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(config)
        )
        if error is None:
            raise ConfigError(" ".join(str(exc).split())) from None
        raise ConfigError(_schema_error_line(error)) from None
    check_cross_references(config)
    check_grid_overrides(config, schema_path)
    return config


def check_grid_overrides(config: dict[str, Any], schema_path: str | os.PathLike) -> None:
    """Each ES grid entry's `es` changes, merged into `es`, must satisfy the `es` schema."""
    import jsonschema

    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    es_schema = {**schema["properties"]["es"], "definitions": schema["definitions"]}
    snn_schema = {**schema["properties"]["snn"], "definitions": schema["definitions"]}
    changes = [(f"config.es_grid.{i}.es", es_schema, config["es"], grid.get("es", {}))
               for i, grid in enumerate(config.get("es_grid", []))]
    for i, study in enumerate(config.get("ablation") or []):
        base = study.get("base") or {}
        where = f"config.ablation.{i}"
        changes.append((f"{where}.base.es", es_schema, config["es"], base.get("es", {})))
        changes.append((f"{where}.base.snn", snn_schema, config["snn"], base.get("snn", {})))
        for name, variant in study["variants"].items():
            variant = variant or {}
            changes.append((f"{where}.variants.{name}.es", es_schema,
                            {**config["es"], **base.get("es", {})}, variant.get("es", {})))
            changes.append((f"{where}.variants.{name}.snn", snn_schema,
                            {**config["snn"], **base.get("snn", {})}, variant.get("snn", {})))
    for where, part_schema, defaults, change in changes:
        merged = {**defaults, **change}
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(part_schema).iter_errors(merged))
        if error is not None:
            key = ".".join(str(p) for p in error.absolute_path)
            raise ConfigError(f"{where}.{key}: {error.message}")


def check_cross_references(config: dict[str, Any]) -> None:
    """Checks that need more than one key: names that must exist, sizes that must fit."""
    datasets = config["datasets"]
    for i, name in enumerate(config["enabled_datasets"]):
        if name not in datasets:
            raise ConfigError(
                f"config.enabled_datasets.{i}: unknown dataset '{name}'; "
                f"known datasets (keys of config.datasets): {sorted(datasets)}"
            )
    for name in config.get("snn_overrides", {}):
        if name not in datasets:
            raise ConfigError(f"config.snn_overrides.{name}: unknown dataset '{name}'")
    cells: dict[tuple, int] = {}
    for i, grid in enumerate(config.get("es_grid", [])):
        for cell in itertools.product(*(grid[k] for k in GRID_KEYS)):
            if cell in cells:
                raise ConfigError(
                    f"config.es_grid.{i}: run {dict(zip(GRID_KEYS, cell))} is also in "
                    f"config.es_grid.{cells[cell]}; each run may appear once")
            cells[cell] = i
        for key, known in (("datasets", config["enabled_datasets"]),
                           ("subsets", list(config["subsets"]))):
            for j, value in enumerate(grid[key]):
                if value not in known:
                    raise ConfigError(
                        f"config.es_grid.{i}.{key}.{j}: '{value}' is not one of the "
                        f"enabled {key} {known}"
                    )
    check_diagnostics(config)
    seen: set[str] = set()
    for i, study in enumerate(config.get("ablation") or []):
        if study["study"] in seen:
            raise ConfigError(f"config.ablation.{i}.study: '{study['study']}' is used twice; "
                              f"study names must differ")
        seen.add(study["study"])
        for key, known in (("dataset", config["enabled_datasets"]),
                           ("subset", list(config["subsets"]))):
            if study[key] not in known:
                raise ConfigError(f"config.ablation.{i}.{key}: '{study[key]}' is not one of "
                                  f"the enabled {key}s {known}")
    for name in config["enabled_datasets"]:
        split_sizes = datasets[name].get("split_sizes", {})
        for subset, sizes in config["subsets"].items():
            for split, size in sizes.items():
                available = split_sizes.get(split)
                if available is not None and size > available:
                    raise ConfigError(
                        f"config.subsets.{subset}.{split}: {size} is larger than the {split} "
                        f"split of dataset '{name}' ({available} images)"
                    )


def check_diagnostics(config: dict[str, Any]) -> None:
    """The `diagnostics` jobs must name enabled datasets and a subset big enough."""
    section = config.get("diagnostics")
    if not section:
        return
    subset = section["subset"]
    if subset not in config["subsets"]:
        raise ConfigError(f"config.diagnostics.subset: '{subset}' is not one of the subsets "
                          f"{list(config['subsets'])}")
    for i, grid in enumerate(section["grid"]):
        for j, name in enumerate(grid["datasets"]):
            if name not in config["enabled_datasets"]:
                raise ConfigError(f"config.diagnostics.grid.{i}.datasets.{j}: '{name}' is not "
                                  f"one of the enabled datasets {config['enabled_datasets']}")
    train = config["subsets"][subset]["train"]
    for key in ("batch_size", "reference_batch"):
        if section.get(key, 0) > train:
            raise ConfigError(f"config.diagnostics.{key}: {section[key]} is larger than the "
                              f"{train} training images of subset '{subset}'")
