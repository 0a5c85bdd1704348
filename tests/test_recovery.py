"""Faults that recover: damaged caches, subsets and checkpoints, deleted outputs, code edits
that only a function-level import reaches, a full disk, and the smoke command run twice.

Each fault is injected into a real, finished run of the tiny config, and the real Snakefile
runs again: the test asserts the one line it prints, that the results come back the same,
and that no good file was lost.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import REPO, SNAKEFILE, planned_jobs, run_snakemake, tiny_config
from snn_es.code_inputs import module_closure

pytestmark = pytest.mark.slow

LIBRARY = REPO / "src" / "snn_es"
SCRIPTS = REPO / "workflow" / "scripts"
# What a rerun must reproduce byte for byte (the timing columns live in es_timing.csv).
ACCURACY_TABLES = ("results/tables/es_runs.csv", "results/tables/baselines.csv",
                   "results/tables/snn_checks.csv")
ES_RUN = "results/es/tinygray/repeat/small/chunked/seed0"


BENCHMARK = {"encoders": ["repeat"], "population": 4, "batch": 4, "steps": 1, "chunks": [2],
             "memory_chunks": [], "repeats": 1}


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    """The workflow and library sources, copied so that a test can edit a module (the jobs
    still import the installed package; the copy's modules are what the rules track)."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copy(SNAKEFILE, root / "Snakefile")
    for folder in ("workflow", "envs", "src"):
        shutil.copytree(REPO / folder, root / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (root / "profiles").symlink_to("workflow/profiles")
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_mirror, workflow_copy):
    """A complete run of `all` and the studies, and a pristine copy of its results."""
    workdir = tmp_path_factory.mktemp("faults")
    config = {**tiny_config(tiny_mirror), "benchmark": BENCHMARK}

    def run(*args, **kwargs):
        return run_snakemake(workdir, config, *args, snakefile=workflow_copy / "Snakefile",
                             **kwargs)

    first = run("all", "studies")
    pristine = tmp_path_factory.mktemp("pristine") / "results"
    shutil.copytree(workdir / "results", pristine)
    return workdir, run, first, pristine


def untimed_log(path: Path) -> list[list[str]]:
    """An ES log without its timing columns (wall_s, member_evals_per_s)."""
    lines = [line.split(",") for line in path.read_text().splitlines()]
    keep = [i for i, name in enumerate(lines[0]) if name not in ("wall_s", "member_evals_per_s")]
    return [[line[i] for i in keep] for line in lines]


def assert_same_results(workdir: Path, pristine: Path) -> None:
    for table in ACCURACY_TABLES:
        assert (workdir / table).read_bytes() == (pristine.parent / table).read_bytes(), table
    for folder in ("data", "subsets"):
        for original in (pristine / folder).rglob("*"):
            if original.is_file() and original.suffix != ".corrupt":
                copy = workdir / "results" / original.relative_to(pristine)
                assert copy.read_bytes() == original.read_bytes(), copy
    assert untimed_log(workdir / ES_RUN / "log.csv") == untimed_log(pristine / ES_RUN[8:] /
                                                                  "log.csv")


def snn_es_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("snn-es: ")]


def test_the_smoke_command_twice_plans_nothing_the_second_time(finished):
    _, run, first, _ = finished
    assert planned_jobs(first)["run_scaling"] == 2  # the first run built the studies too
    assert planned_jobs(run("all", "studies", "--dry-run")) == {}
    # `all` alone then takes the studies' checksums as the manifest's params (they are no
    # inputs of `all`): the manifest is rewritten once, and `all` twice is a no-op too
    assert planned_jobs(run("all")) == {"write_manifest": 1, "all": 1}
    assert planned_jobs(run("all", "--dry-run")) == {}


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_cache_is_set_aside_and_rebuilt_to_the_same_bytes(finished, damage):
    workdir, run, _, pristine = finished
    path = f"results/data/{'tinyrgb' if damage == 'garbled' else 'tinygray'}/train.pt"
    damage_file(workdir / path, damage)
    proc = run("all")
    assert snn_es_lines(proc) == [
        f"snn-es: {path} is damaged: its sha256 does not match the one recorded when it was "
        f"written ({(workdir / (path + '.corrupt')).stat().st_size} bytes now); moved it to "
        f"{path}.corrupt, and rule cache_dataset rebuilds it"]
    assert planned_jobs(proc)["cache_dataset"] == 1
    assert_same_results(workdir, pristine)
    assert planned_jobs(run("all", "--dry-run")) == {}


def test_a_truncated_subset_is_redrawn_to_the_same_bytes(finished):
    workdir, run, _, pristine = finished
    path = "results/subsets/tinygray/small.pt"
    damage_file(workdir / path, "truncated")
    proc = run("all")
    lines = snn_es_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(f"snn-es: {path} is damaged: its sha256")
    assert lines[0].endswith(f"moved it to {path}.corrupt, and rule materialize_subset "
                             f"rebuilds it")
    assert planned_jobs(proc)["materialize_subset"] == 1
    assert "cache_dataset" not in planned_jobs(proc)  # the good cache is left alone
    assert_same_results(workdir, pristine)


def test_a_damaged_file_read_outside_the_workflow_names_itself_and_the_fix(finished):
    workdir, _, _, _ = finished
    from snn_es.data import load_cached_split
    from snn_es.io import DamagedFileError
    from snn_es.subsets import load_subset

    for path, load, rule in (("results/data/tinyrgb/test.pt", load_cached_split,
                              "cache_dataset"),
                             ("results/subsets/tinyrgb/big.pt", load_subset,
                              "materialize_subset")):
        target = workdir / path
        good = target.read_bytes()
        try:
            damage_file(target, "garbled")
            with pytest.raises(DamagedFileError) as info:
                load(target)
            message = str(info.value)
            assert message.startswith(f"{target} is damaged: its sha256 does not match")
            assert message.endswith(f"(rule {rule})") and "\n" not in message
        finally:
            target.write_bytes(good)


@pytest.mark.parametrize("deleted", ["results/tables/es_runs.csv",
                                     "results/plots/learning_curves.png"])
def test_a_deleted_published_file_is_rebuilt_by_its_rule(finished, deleted):
    workdir, run, _, pristine = finished
    (workdir / deleted).unlink()
    proc = run("all")
    assert planned_jobs(proc) == {"aggregate": 1, "write_manifest": 1, "all": 1}
    assert (workdir / deleted).exists()
    assert_same_results(workdir, pristine)
    manifest = (workdir / "results/manifest.tsv").read_text().splitlines()[1:]
    for line in manifest:  # only files that exist, with their current hashes
        path, sha, size, _ = line.split("\t")
        assert (workdir / path).stat().st_size == int(size), path
    from snn_es.io import sha256_file
    entry = next(line for line in manifest if line.startswith(deleted + "\t"))
    assert entry.split("\t")[1] == sha256_file(workdir / deleted)


def test_a_garbled_checkpoint_is_never_resumed(finished):
    workdir, run, _, pristine = finished
    checkpoint = workdir / ES_RUN / "checkpoint.pt"
    (workdir / ES_RUN / "metrics.json").unlink()
    checkpoint.write_bytes(bytes(torch.randint(0, 256, (200,), dtype=torch.uint8,
                                               generator=torch.Generator().manual_seed(1))
                                 .tolist()))
    proc = run("all")
    rel = f"{ES_RUN}/checkpoint.pt"
    assert snn_es_lines(proc) == [
        f"snn-es: {rel} is damaged: it does not start with the snn-es checkpoint header; "
        f"moved it to {rel}.corrupt and started this run over from generation 0"]
    assert (workdir / (rel + ".corrupt")).stat().st_size == 200
    assert not checkpoint.exists()
    assert_same_results(workdir, pristine)


def test_a_truncated_checkpoint_starts_over_and_an_intact_one_resumes(finished):
    workdir, run, _, pristine = finished
    from snn_es.es.run import run_es
    from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings
    from snn_es.subsets import load_subset

    # a real checkpoint of this run after its first generation, as a killed job leaves it
    spec = json.loads((workdir / ES_RUN / "metrics.json").read_text())["config"]
    subset = load_subset(workdir / "results/subsets/tinygray/small.pt")
    manifest = json.loads((workdir / "results/subsets/tinygray/small.json").read_text())
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]),
                      num_classes=len(subset["classes"]), **spec["snn"])
    checkpoint = workdir / ES_RUN / "checkpoint.pt"
    rel = f"{ES_RUN}/checkpoint.pt"

    def killed_after_one_generation():
        run_es(subset, cfg, ESSettings(**spec["es"]), spec["encoder"], spec["seed"],
               spec["mode"], checkpoint, ExecutionSettings(chunk_size=2, checkpoint_every=1),
               data_id=manifest["file_sha256"], progress=False, stop_after=1)
        (workdir / ES_RUN / "metrics.json").unlink()

    killed_after_one_generation()
    damage_file(checkpoint, "truncated")
    lines = snn_es_lines(run("all"))
    assert len(lines) == 1 and lines[0].startswith(f"snn-es: {rel} is damaged: its payload")
    assert lines[0].endswith("started this run over from generation 0")
    assert_same_results(workdir, pristine)

    killed_after_one_generation()
    assert snn_es_lines(run("all")) == [
        f"snn-es: resuming from {rel} at generation 1 of 2"]
    assert_same_results(workdir, pristine)


def test_an_edit_that_only_a_function_level_import_reaches_reruns_its_jobs(finished,
                                                                          workflow_copy):
    """benchmark.py imports snn_es.subsets inside a function only: still a code input."""
    _, run, _, _ = finished
    subsets = workflow_copy / "src/snn_es/subsets.py"
    benchmark = (workflow_copy / "src/snn_es/benchmark.py").read_text()
    assert "from snn_es.subsets import load_subset" in benchmark
    assert "\nfrom snn_es.subsets" not in benchmark  # only inside a function
    run("benchmark")
    original = subsets.read_text()
    try:
        subsets.touch()  # mtime alone: nothing
        assert planned_jobs(run("benchmark", "--dry-run")) == {}
        subsets.write_text(original + "\n# an edit\n")
        assert planned_jobs(run("benchmark", "--dry-run"))["benchmark"] == 1
    finally:
        subsets.write_text(original)
    assert planned_jobs(run("benchmark", "all", "--dry-run")) == {}


def test_every_rule_takes_the_import_graph_of_its_script_as_its_code(tiny_mirror, tmp_path):
    """The code inputs in a forced dry run of every target are exactly each script's import
    graph, and that graph holds every module the script's imports really load."""
    config = {**tiny_config(tiny_mirror), "benchmark": BENCHMARK}
    proc = run_snakemake(tmp_path, config, "all", "studies", "benchmark", "--dry-run",
                         "--forceall")
    scripts = rule_scripts()
    checked = set()
    for block in proc.stdout.split("\nrule ")[1:]:
        name = block.split(":", 1)[0]
        inputs = next((line.split("input: ", 1)[1].split(", ") for line in block.splitlines()
                       if line.strip().startswith("input: ")), [])
        code = sorted(path for path in inputs if path.startswith(str(LIBRARY)))
        if name not in scripts:
            assert not code, name
            continue
        expected = sorted(str(p) for p in module_closure(SCRIPTS / scripts[name], LIBRARY))
        assert code == expected, name
        checked.add(name)
    assert {"cache_dataset", "materialize_subset", "run_es", "run_ablation", "run_scaling",
            "aggregate", "write_manifest", "benchmark", "aggregate_scaling"} <= checked
    loaded = modules_loaded_by_imports([SCRIPTS / name for name in sorted(set(scripts.values()))])
    for script, files in loaded.items():
        assert files and files <= set(module_closure(script, LIBRARY)), script


def test_the_import_graph_follows_imports_inside_functions(tmp_path):
    package = tmp_path / "snn_es"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "top.py", "sub/deep.py", "unused.py"):
        (package / name).write_text("")
    (package / "top.py").write_text("def later():\n    from snn_es.sub import deep\n")
    script = tmp_path / "job.py"
    script.write_text("import os\nfrom snn_es.top import later\n")
    found = {str(p.relative_to(package)) for p in module_closure(script, package)}
    assert found == {"__init__.py", "top.py", "sub/__init__.py", "sub/deep.py"}


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path):
    """A write past the file-size limit (as on a full disk) fails in one line, leaves the old
    file as it was and no temporary file behind."""
    target = tmp_path / "table.csv"
    target.write_text("the previous table\n")
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from snn_es.io import WriteFailedError, atomic_write_bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, {resource.RLIM_INFINITY}))
        try:
            atomic_write_bytes({str(target)!r}, b"x" * 100_000)
        except WriteFailedError as exc:
            print(exc)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith(f"cannot write {target} (100000 bytes): File too large. "
                                  f"The previous file is intact. Fix: free disk space")
    assert target.read_text() == "the previous table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def damage_file(path: Path, damage: str) -> None:
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # 200 seeded random bytes in the middle, at the same size
        noise = bytes(torch.randint(0, 256, (200,), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(0)).tolist())
        middle = max(0, len(data) // 2 - 100)
        path.write_bytes(data[:middle] + noise + data[middle + 200:])


def rule_scripts() -> dict[str, str]:
    """Rule name -> job script file name, from the rule files (`use rule` inherits)."""
    scripts: dict[str, str] = {}
    texts = ["\n" + path.read_text() for path in sorted((REPO / "workflow/rules").glob("*.smk"))]
    for text in texts:
        for block in text.split("\nrule ")[1:]:
            name, body = block.split(":", 1)[0].strip(), block.split("\nuse rule ", 1)[0]
            if '"../scripts/' in body:
                scripts[name] = body.split('"../scripts/', 1)[1].split('"', 1)[0]
    for text in texts:
        for line in text.splitlines():
            if line.startswith("use rule "):
                base, alias = line[len("use rule "):].split(" with")[0].split(" as ")
                scripts[alias.strip()] = scripts[base.strip()]
    return scripts


def modules_loaded_by_imports(scripts: list[Path]) -> dict[Path, set[Path]]:
    """Per script, the package files that running its import statements loads (in one
    fresh interpreter, the package unloaded between scripts): what its graph must hold."""
    import ast

    imports = {}
    for script in scripts:
        tree = ast.parse(script.read_text())
        imports[str(script)] = sorted(
            {node.module for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module.startswith("snn_es")}
            | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names if alias.name.startswith("snn_es")})
    code = textwrap.dedent(f"""
        import importlib, json, sys
        loaded = {{}}
        for script, names in {imports!r}.items():
            for name in [n for n in sys.modules if n.split(".")[0] == "snn_es"]:
                del sys.modules[name]
            for name in names:
                importlib.import_module(name)
            loaded[script] = [m.__file__ for n, m in sys.modules.items()
                              if n.split(".")[0] == "snn_es"]
        print(json.dumps(loaded))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    return {Path(script): {Path(f).resolve() for f in files}
            for script, files in json.loads(out).items()}
