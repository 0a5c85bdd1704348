"""The config: checking it, and expanding it into the runs it defines.

``check_config`` applies the JSON schema first, then the cross-references a schema cannot
express, then expands every run. Every problem becomes one ``ConfigError`` whose message is a
single line naming the key and what is wrong, raised before any job runs.

``expand_runs`` is the one place where settings are merged: defaults (``snn_es.settings``)
<- the ``snn`` / ``es`` sections <- the dataset's ``snn_overrides`` <- a grid entry's ``es``
or a study's ``base`` and variant. Each run gets one canonical spec: every key present
(defaults filled in), keys sorted, ``1`` and ``1.0`` alike. Jobs receive exactly that spec,
so reordering the config or writing a default out changes nothing and reruns nothing.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import yaml

from snn_es.errors import UserError
from snn_es.settings import (ESSettings, ExecutionSettings, ReadoutFitSettings, SNNSettings,
                             canonical)

ENCODERS = ("poisson", "deterministic", "repeat", "latency")
GRID_KEYS = ("datasets", "encoders", "subsets", "modes", "seeds")
# The side-by-side with an established ES library (config section `peers`, snn_es.peers).
PEER_IMPLEMENTATIONS = ("snn_es", "snn_es_chunked", "evotorch_snes", "evotorch_pgpe")
# The project's own rows -> their population evaluator (`run_es`'s mode): snn_es has the
# default grid's, snn_es_chunked the chunked one (the scaling points and studies use it)
PEER_PROJECT_MODES = {"snn_es": "flip_delta", "snn_es_chunked": "chunked"}
PEER_EVOTORCH = {"evotorch_snes": "snes", "evotorch_pgpe": "pgpe"}  # -> `peers.evotorch` key
# The `es` keys that define the problem and budget of an EvoTorch run (the rest configure
# the project's strategy, so changing them reruns only the `snn_es` rows).
PEER_SHARED_ES = ("batch_size", "eval_every", "fitness", "generations", "init_conv_scale",
                  "init_readout_scale", "population", "spike_noise")


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
    check_minibatches(config, expand_runs(config))  # every run's merged settings, too
    return config


def check_minibatches(config: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    """A run's minibatches (``batch_size``, and ``readout_batch_size`` with readout steps)
    must fit in its subset's training images (else they would silently be smaller)."""
    for run, spec in runs.items():
        train = config["subsets"][spec["subset"]]["train"]
        es = spec["es"]
        keys = ("batch_size", "readout_batch_size") if es["readout_steps"] else ("batch_size",)
        for key in keys:
            if es[key] > train:
                raise ConfigError(f"{run}: es.{key} {es[key]} is larger than the {train} "
                                  f"training images of subset '{spec['subset']}'; lower "
                                  f"es.{key} or use a larger subset")


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
    check_peers(config)
    check_scaling(config)
    check_benchmark(config)
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


def check_benchmark(config: dict[str, Any]) -> None:
    """The `benchmark` subset, if any, must exist and hold its minibatch of B images."""
    section = config.get("benchmark") or {}
    subset = section.get("subset")
    if subset is None:
        return
    if subset not in config["subsets"]:
        raise ConfigError(f"config.benchmark.subset: '{subset}' is not one of the subsets "
                          f"{list(config['subsets'])} (null: uniform noise)")
    train, batch = config["subsets"][subset]["train"], section.get("batch", 128)
    if batch > train:
        raise ConfigError(f"config.benchmark.batch: {batch} is larger than the {train} "
                          f"training images of subset '{subset}'")


def check_scaling(config: dict[str, Any]) -> None:
    """The `scaling` cells must name enabled datasets and a subset that holds a minibatch."""
    section = config.get("scaling")
    if not section:
        return
    if section["subset"] not in config["subsets"]:
        raise ConfigError(f"config.scaling.subset: '{section['subset']}' is not one of the "
                          f"subsets {list(config['subsets'])}")
    for i, cell in enumerate(section["cells"]):
        if cell["dataset"] not in config["enabled_datasets"]:
            raise ConfigError(f"config.scaling.cells.{i}.dataset: '{cell['dataset']}' is not "
                              f"one of the enabled datasets {config['enabled_datasets']}")
        unknown = sorted(set(cell.get("allocations", [])) - set(section["allocations"]))
        if unknown:
            raise ConfigError(f"config.scaling.cells.{i}.allocations: {unknown} are not among "
                              f"config.scaling.allocations {sorted(section['allocations'])}")
    train = config["subsets"][section["subset"]]["train"]
    for name, allocation in section["allocations"].items():
        batch = es_settings(config, allocation)["batch_size"]
        if batch > train:
            raise ConfigError(f"config.scaling.allocations.{name}.batch_size: {batch} is "
                              f"larger than the {train} training images of subset "
                              f"'{section['subset']}'")


def check_peers(config: dict[str, Any]) -> None:
    """The `peers` runs must name an enabled dataset, a known subset, and a minibatch that
    fits in it (else the budgets of the implementations would not be what they say)."""
    section = config.get("peers")
    if not section:
        return
    for key, known in (("dataset", config["enabled_datasets"]),
                       ("subset", list(config["subsets"]))):
        if section[key] not in known:
            raise ConfigError(f"config.peers.{key}: '{section[key]}' is not one of the "
                              f"enabled {key}s {known}")
    runs = peer_runs(config)  # the merged settings must be valid, too
    train = config["subsets"][section["subset"]]["train"]
    for spec in runs.values():
        if spec["es"]["batch_size"] > train:
            raise ConfigError(f"config.peers.es.batch_size: {spec['es']['batch_size']} is "
                              f"larger than the {train} training images of subset "
                              f"'{section['subset']}'")


# --------------------------------------------------------------------------------------
# Runs: the config expanded into one canonical spec per ES run
# --------------------------------------------------------------------------------------


def canonical_json(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, recursively (a job's params compare by
    their repr, which follows insertion order)."""
    if isinstance(value, dict):
        return {str(k): canonical_json(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical_json(v) for v in value]
    return value


def _settings(cls, where: str, *layers: dict[str, Any] | None) -> dict[str, Any]:
    """``cls``'s defaults updated by each layer in turn, as a canonical dict."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer or {})
    try:
        return canonical(cls(**merged))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def snn_settings(config: dict[str, Any], dataset: str, *changes: dict[str, Any] | None,
                 where: str = "config.snn") -> dict[str, Any]:
    """The canonical ``snn`` of ``dataset``: the section, its overrides, then ``changes``."""
    return _settings(SNNSettings, where, config.get("snn"),
                     config.get("snn_overrides", {}).get(dataset), *changes)


def es_settings(config: dict[str, Any], *changes: dict[str, Any] | None,
                where: str = "config.es") -> dict[str, Any]:
    """The canonical ``es``: the section, then ``changes``."""
    return _settings(ESSettings, where, config.get("es"), *changes)


def readout_fit_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The canonical `readout_fit` section (part of the reference's results)."""
    return _settings(ReadoutFitSettings, "config.readout_fit", config.get("readout_fit"))


def execution_settings(config: dict[str, Any]) -> ExecutionSettings:
    """How fast runs go (never part of a spec)."""
    try:
        return ExecutionSettings(**(config.get("execution") or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config.execution: {error}") from None


def run_spec(dataset: str, encoder: str, subset: str, mode: str, seed: int,
             snn: dict[str, Any], es: dict[str, Any]) -> dict[str, Any]:
    return canonical_json({"dataset": dataset, "encoder": encoder, "subset": subset,
                           "mode": mode, "seed": int(seed), "snn": snn, "es": es})


def grid_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ES grid: ``es/{dataset}/{encoder}/{subset}/{mode}/seed{seed}`` -> spec."""
    runs = {}
    for i, grid in enumerate(config.get("es_grid", [])):
        es = es_settings(config, grid.get("es"), where=f"config.es_grid.{i}.es")
        for dataset, encoder, subset, mode, seed in itertools.product(
                *(grid[k] for k in GRID_KEYS)):
            snn = snn_settings(config, dataset, where=f"config.snn_overrides.{dataset}")
            runs[f"es/{dataset}/{encoder}/{subset}/{mode}/seed{seed}"] = run_spec(
                dataset, encoder, subset, mode, seed, snn, es)
    return runs


def study_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ablation studies: ``ablation/{study}/{variant}/seed{seed}`` -> spec (chunked ES
    runs; every variant with every seed of its study, so differences come with a spread)."""
    runs = {}
    for i, study in enumerate(config.get("ablation") or []):
        base = study.get("base") or {}
        for name, variant in study["variants"].items():
            variant, where = variant or {}, f"config.ablation.{i}.variants.{name}"
            snn = snn_settings(config, study["dataset"], base.get("snn"), variant.get("snn"),
                               where=f"{where}.snn")
            es = es_settings(config, base.get("es"), variant.get("es"), where=f"{where}.es")
            for seed in study["seeds"]:
                runs[f"ablation/{study['study']}/{name}/seed{seed}"] = run_spec(
                    study["dataset"], variant.get("encoder", study["encoder"]),
                    study["subset"], "chunked", seed, snn, es)
    return runs


def study_labels(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the ablation table says of each study run: study, variant, its changes, seed."""
    return {f"ablation/{study['study']}/{name}/seed{seed}": canonical_json(
                {"study": study["study"], "variant": name, "changes": variant or {},
                 "seed": int(seed)})
            for study in config.get("ablation") or []
            for name, variant in study["variants"].items() for seed in study["seeds"]}


def scaling_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compute-scaling study (section `scaling`): one chunked ES run per cell x
    allocation x budget x seed, ``scaling/{dataset}/{encoder}/{allocation}/e{budget}/seed{seed}``.

    ``es`` <- the cell's ``es`` <- the allocation <- ``generations = budget / (population x
    batch_size)``, which must divide exactly, so every point's budget is exactly what the
    table says. A cell's ``budgets`` and ``seeds`` replace the section's, its ``allocations``
    (names) pick some of the section's.
    """
    section = config.get("scaling")
    if not section:
        return {}
    runs = {}
    for i, cell in enumerate(section["cells"]):
        dataset, encoder = cell["dataset"], cell["encoder"]
        snn = snn_settings(config, dataset, section.get("snn"), where="config.scaling.snn")
        for name in cell.get("allocations", section["allocations"]):
            allocation, where = section["allocations"][name], f"config.scaling.allocations.{name}"
            shape = es_settings(config, cell.get("es"), allocation, where=where)
            per_generation = shape["population"] * shape["batch_size"]
            for budget in cell.get("budgets", section["budgets"]):
                generations, rest = divmod(int(budget), per_generation)
                if rest or not generations:
                    raise ConfigError(
                        f"config.scaling.budgets: {budget} is not a positive multiple of "
                        f"population x batch_size = {per_generation} of allocation '{name}'")
                es = es_settings(config, cell.get("es"), allocation,
                                 {"generations": generations}, where=where)
                for seed in cell.get("seeds", section["seeds"]):
                    run = f"scaling/{dataset}/{encoder}/{name}/e{int(budget)}/seed{seed}"
                    if run in runs:
                        raise ConfigError(
                            f"config.scaling.cells[{i}]: {run} is already a point of an "
                            f"earlier cell; give each cell its own budgets or seeds")
                    runs[run] = run_spec(dataset, encoder, section["subset"], "chunked", seed,
                                         snn, es)
    return runs


def same_spec_run(spec: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str | None:
    """The run of ``runs`` whose spec is exactly ``spec``, if there is one: a table row then
    reads that run instead of repeating it (it would be bit-identical: same seeds, data and
    settings)."""
    return next((run for run, other in runs.items() if other == spec), None)


def reusable_runs(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The runs that other tables read instead of repeating them where the specs are the
    same (``same_spec_run``): the grid's and the scaling points, not the studies' (a study's
    base reads one of these itself)."""
    return {run: spec for run, spec in runs.items() if not run.startswith("ablation/")}


def same_es_run(peer: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str | None:
    """The run of ``runs`` with exactly a project row's settings (``snn_es``,
    ``snn_es_chunked``), if there is one (``same_spec_run``)."""
    if peer["implementation"] not in PEER_PROJECT_MODES:
        return None
    return same_spec_run({k: v for k, v in peer.items() if k != "implementation"}, runs)


def expand_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every ES run the config defines: run id (its folder under ``results/``) -> spec."""
    return {**grid_runs(config), **study_runs(config), **scaling_runs(config)}


def peer_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The side-by-side (section `peers`): ``peers/{implementation}/seed{seed}`` -> spec.

    Every implementation gets the same problem and budget: ``snn`` <- overrides <- the
    section's ``snn``; ``es`` <- the section's ``es`` (as a grid entry's), so the project's own
    rows (``snn_es``, a ``run_es`` with the grid's flip_delta evaluator;
    ``snn_es_chunked``, the same with the chunked one) are the default strategy at that budget. EvoTorch rows
    add their block of ``peers.evotorch`` (floats canonical, as in ``es``).
    """
    section = config.get("peers")
    if not section:
        return {}
    dataset = section["dataset"]
    snn = snn_settings(config, dataset, section.get("snn"), where="config.peers.snn")
    es = es_settings(config, section.get("es"), where="config.peers.es")
    runs = {}
    for implementation in section["implementations"]:
        for seed in section["seeds"]:
            spec = {"implementation": implementation, "dataset": dataset,
                    "encoder": section["encoder"], "subset": section["subset"],
                    "seed": int(seed), "snn": snn, "es": es}
            if implementation in PEER_PROJECT_MODES:
                spec["mode"] = PEER_PROJECT_MODES[implementation]
            else:
                spec["es"] = {k: es[k] for k in PEER_SHARED_ES}
                block = (section.get("evotorch") or {}).get(PEER_EVOTORCH[implementation], {})
                spec["evotorch"] = {k: float(v) if isinstance(v, int) and not isinstance(
                    v, bool) else v for k, v in block.items()}
            runs[f"peers/{implementation}/seed{seed}"] = canonical_json(spec)
    return runs
