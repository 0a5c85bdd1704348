"""The real Snakefile, end to end, on a tiny config in a temporary folder."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import (REPO, SNAKEFILE, make_tiny_dataset, planned_jobs, reversed_keys,
                      run_snakemake, tiny_config)
from snn_es.config import check_config, expand_runs
from snn_es.settings import ESSettings, SNNSettings, defaults

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    """A copy of the workflow and library sources, so a test can edit a library module.

    The jobs still import the installed package; the copy's modules are what the rules track.
    """
    root = tmp_path_factory.mktemp("repo")
    shutil.copy(SNAKEFILE, root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow")
    shutil.copytree(REPO / "envs", root / "envs")
    (root / "profiles").symlink_to("workflow/profiles")  # the default profile, as in the repo
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_mirror, workflow_copy):
    """A complete run of `all` on the tiny config (shared by the tests below, in order)."""
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(tiny_mirror)
    snakefile = workflow_copy / "Snakefile"

    def run(cfg, *args, **kwargs):
        return run_snakemake(workdir, cfg, *args, snakefile=snakefile, **kwargs)

    return workdir, config, run, run(config, "all")


def test_full_run_builds_every_target(built):
    workdir, config, _, proc = built
    assert planned_jobs(proc) == {  # the studies are named targets outside `all`
        "all": 1, "cache_dataset": 2, "materialize_subset": 4, "train_cnn": 4,
        "snn_forward_check": 2, "train_snn_bptt": 4, "run_es": 2, "fit_readout": 2, "aggregate": 1,
        "write_manifest": 1}
    for dataset in config["enabled_datasets"]:
        assert (workdir / f"results/data/{dataset}/info.json").exists()
        assert (workdir / f"logs/cache_dataset/{dataset}.log").exists()
        for subset in config["subsets"]:
            assert (workdir / f"results/subsets/{dataset}/{subset}.pt").exists()
            assert (workdir / f"logs/materialize_subset/{dataset}/{subset}.log").exists()
            assert (workdir / f"results/baselines/cnn/{dataset}/{subset}/metrics.json").exists()
            assert (workdir / f"results/baselines/bptt/{dataset}/repeat/{subset}/epochs.csv").exists()
        assert (workdir / f"results/checks/{dataset}/repeat.json").exists()
    es_run = workdir / "results/es/tinygray/repeat/small/chunked/seed0"
    assert len((es_run / "log.csv").read_text().splitlines()) == 1 + 2  # header + generations
    assert not (es_run / "checkpoint.pt").exists()  # removed once the run is complete
    assert not (workdir / "results/ablation").exists()


def test_second_run_executes_nothing(built):
    _, config, run, _ = built
    assert planned_jobs(run(config, "all")) == {}


def test_studies_are_named_targets_that_the_manifest_then_covers(built):
    workdir, config, run, _ = built
    proc = run(config, "studies")
    assert planned_jobs(proc) == {"run_ablation": 2, "aggregate_ablation": 1,
                                  "run_scaling": 2, "aggregate_scaling": 1, "studies": 1}
    # the manifest of `all` now lists the built studies: only it reruns, then nothing
    assert planned_jobs(run(config, "all", "--dry-run")) == {"write_manifest": 1, "all": 1}
    run(config, "all")
    assert planned_jobs(run(config, "all", "--dry-run")) == {}
    manifest = (workdir / "results/manifest.tsv").read_text()
    for path in ("results/tables/es_ablation.csv", "results/plots/es_scaling.png",
                 "results/scaling/tinygray/repeat/p4_b4/e32/seed0/metrics.json"):
        assert f"\n{path}\t" in manifest, path
    scaling = (workdir / "results/tables/es_scaling.csv").read_text().splitlines()
    assert scaling[0].startswith("dataset,encoder,allocation,evaluations,seed,population")
    assert [line.split(",")[:5] for line in scaling[1:]] == [
        ["tinygray", "repeat", "p4_b4", "16", "0"], ["tinygray", "repeat", "p4_b4", "32", "0"]]
    log = (workdir / "results/scaling/tinygray/repeat/p4_b4/e32/seed0/log.csv").read_text()
    assert len(log.splitlines()) == 1 + 2  # 32 = 2 generations x 4 members x 4 images
    ablation = (workdir / "results/tables/es_ablation.csv").read_text().splitlines()
    assert ablation[0].startswith("study,variant,changes,dataset,encoder,generations")
    assert [line.split(",")[:2] for line in ablation[1:]] == [["tiny", "base"],
                                                              ["tiny", "rank1_margin"]]
    variant = json.loads(
        (workdir / "results/ablation/tiny/rank1_margin/seed0/metrics.json").read_text())
    resolved = variant["config"]
    assert resolved["es"]["rank"] == 1 and resolved["es"]["lr"] == 0.05  # variant over base
    assert resolved["snn"]["num_steps"] == 3 and resolved["es"]["fitness"] == "margin"
    assert (workdir / "results/plots/es_ablation.png").stat().st_size > 0
    # a rebuilt study changes its files: the manifest follows on the next `all`
    (workdir / "results/tables/es_scaling.csv").write_text("edited\n")
    assert planned_jobs(run(config, "all", "--dry-run")) == {"write_manifest": 1, "all": 1}
    run(config, "scaling", "--forcerun", "aggregate_scaling")
    run(config, "all")


def test_a_study_run_identical_to_a_grid_run_reads_that_run(built):
    workdir, config, run, _ = built
    same = copy.deepcopy(config)
    # the base now has exactly the settings of the grid's chunked run (es and snn unchanged)
    same["ablation"][0]["base"] = {}
    proc = run(same, "results/tables/es_ablation.csv", "--dry-run", "--forcerun",
               "aggregate_ablation")
    # only the variant is a new run; the table reads the grid's run for the base
    assert planned_jobs(proc) == {"run_ablation": 1, "aggregate_ablation": 1}
    aggregate = proc.stdout.split("rule aggregate_ablation:", 1)[1].split("\n\n", 1)[0]
    assert "results/es/tinygray/repeat/small/chunked/seed0/metrics.json" in aggregate
    assert "results/ablation/tiny/base/" not in aggregate


def test_library_edits_rerun_exactly_the_stages_that_use_them(built, workflow_copy):
    _, config, run, _ = built
    library = workflow_copy / "src" / "snn_es"
    originals = {name: (library / name).read_text()
                 for name in ("subsets.py", "data.py", "checks.py")}

    def edit(name):
        with open(library / name, "a") as handle:
            handle.write("\n# an edit\n")

    def planned():
        return planned_jobs(run(config, "all", "--dry-run"))

    downstream = {"all": 1, "aggregate": 1, "write_manifest": 1}
    # A checkout that only touches mtimes reruns nothing (small inputs are compared by checksum).
    for module in library.glob("*.py"):
        module.touch()
    assert planned() == {}
    edit("checks.py")
    assert planned() == {**downstream, "snn_forward_check": 2}
    edit("subsets.py")
    assert planned() == {**downstream, "materialize_subset": 4, "train_cnn": 4,
                         "snn_forward_check": 2, "train_snn_bptt": 4, "run_es": 2,
                         "fit_readout": 2}
    edit("data.py")
    assert planned()["cache_dataset"] == 2
    for name, text in originals.items():  # same content again: nothing to do
        (library / name).write_text(text)
    assert planned() == {}


def test_a_rerun_with_identical_content_does_not_cascade(built):
    _, config, run, _ = built
    forced = run(config, "subsets_all", "--forcerun", "materialize_subset")
    assert planned_jobs(forced)["materialize_subset"] == 4
    # The subsets were rewritten with the same bytes: nothing downstream is out of date.
    assert planned_jobs(run(config, "all", "--dry-run")) == {}


def test_two_runs_from_scratch_publish_identical_accuracy_tables(built, tiny_mirror,
                                                                 workflow_copy, tmp_path):
    workdir, config, _, _ = built
    run_snakemake(tmp_path, config, "all", snakefile=workflow_copy / "Snakefile")
    for table in ("es_runs.csv", "baselines.csv", "snn_checks.csv"):
        first = (workdir / "results/tables" / table).read_bytes()
        assert (tmp_path / "results/tables" / table).read_bytes() == first, table
    entries = []
    for folder in (workdir, tmp_path):
        lines = (folder / "results/manifest.tsv").read_text().splitlines()
        accuracy = ("es_runs.csv", "baselines.csv", "snn_checks.csv", "learning_curves.png")
        entries.append([line for line in lines if line.split("\t")[0].endswith(accuracy)])
    assert len(entries[0]) == 4 and entries[0] == entries[1]


@pytest.mark.parametrize(("entry", "change", "mode"),
                         [(1, {"lr": 0.03}, "sequential"), (0, {"sigma": 0.05}, "chunked")])
def test_editing_one_grid_entry_reruns_its_runs_and_the_aggregation(built, entry, change, mode):
    _, config, run, _ = built
    changed = copy.deepcopy(config)
    changed["es_grid"][entry].setdefault("es", {}).update(change)
    dry = run(changed, "all", "--dry-run")
    assert planned_jobs(dry) == {"all": 1, "run_es": 1, "fit_readout": 1, "aggregate": 1,
                                 "write_manifest": 1}
    other = "chunked" if mode == "sequential" else "sequential"
    assert f"run=es/tinygray/repeat/small/{mode}/seed0" in dry.stdout
    assert f"run=es/tinygray/repeat/small/{other}/seed0" not in dry.stdout


def test_reordered_keys_and_written_out_defaults_rerun_nothing(built):
    _, config, run, _ = built
    rewritten = reversed_keys(config)
    for section, cls in (("snn", SNNSettings), ("es", ESSettings)):
        rewritten[section] = {**defaults(cls), **rewritten[section]}  # defaults written out
    rewritten["cnn"]["weight_decay"] = 0.0  # the schema's default
    assert planned_jobs(run(rewritten, "all", "--dry-run", sort_keys=False)) == {}


def test_speed_settings_rerun_nothing(built):
    _, config, run, _ = built
    for execution in ({"chunk_size": 1}, {"fused": False}, {"checkpoint_every": 7},
                      {"chunk_size": 4, "fused": True, "checkpoint_every": 2}):
        changed = copy.deepcopy(config)
        changed["execution"] = execution
        assert planned_jobs(run(changed, "all", "--dry-run")) == {}, execution


def test_published_outputs_and_report(built):
    workdir, config, run, _ = built
    tables = workdir / "results" / "tables"
    runs = (tables / "es_runs.csv").read_text().splitlines()
    assert runs[0].startswith("dataset,encoder,subset,mode,seed,generations,evaluations")
    assert len(runs) == 1 + 2
    manifest = (workdir / "results" / "manifest.tsv").read_text().splitlines()
    assert any(line.startswith("results/tables/es_runs.csv\t") for line in manifest)
    # header, aggregate, cnn, bptt, checks, es, readout fits; the studies built above:
    # aggregate_ablation, ablation runs, aggregate_scaling, scaling runs
    assert len(manifest) == 1 + 9 + 4 + 4 + 2 + 2 + 2 + 2 + 2 + 2 + 2
    assert any(line.startswith("results/ablation/tiny/rank1_margin/seed0/metrics.json\t")
               for line in manifest)
    run(config, "--report", str(workdir / "report.html"), "all", "studies")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "es_runs.csv" in html and "surrogate-gradient" in html
    assert "es_scaling.csv" in html and "es_ablation.csv" in html


def test_changing_one_subset_reruns_exactly_its_jobs(built):
    _, config, run, _ = built
    changed = copy.deepcopy(config)
    changed["subsets"]["small"]["train"] = 15
    dry = run(changed, "all", "--dry-run")
    # the small subsets and everything downstream of them (the forward checks read the
    # subset with the fewest test images, `small`); nothing of `big`
    assert planned_jobs(dry) == {"all": 1, "materialize_subset": 2, "train_cnn": 2,
                                 "snn_forward_check": 2, "train_snn_bptt": 2, "run_es": 2,
                                 "fit_readout": 2,
                                 "aggregate": 1, "write_manifest": 1}
    assert "wildcards: dataset=tinyrgb, subset=small" in dry.stdout
    assert "subset=big" not in dry.stdout
    run(changed, "all")
    assert planned_jobs(run(changed, "all", "--dry-run")) == {}


def test_bad_config_stops_before_any_job_with_one_line(tmp_path, tiny_mirror):
    config = tiny_config(tiny_mirror)
    config["subsets"]["small"]["train"] = 0
    proc = run_snakemake(tmp_path, config, "all", check=False)
    assert proc.returncode != 0
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "config.subsets" in l]
    assert lines == ["config.subsets.small.train: 0 is less than the minimum of 1"]
    assert not (tmp_path / "results").exists()


def test_unreachable_source_fails_the_job_cleanly(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "no-such-mirror")
    proc = run_snakemake(tmp_path, config, "results/data/tinyrgb/info.json", check=False)
    assert proc.returncode != 0
    assert "DataSourceError: Cannot load dataset 'tinyrgb'" in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("info.json"))


def test_lint_reports_nothing():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--lint"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_slurm_profile_builds_the_dag():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--workflow-profile",
         str(REPO / "workflow/profiles/slurm"), "--dry-run", "--forceall", "all"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "This was a dry-run" in proc.stdout + proc.stderr
    grid = [run for run in expand_runs(check_config(
        yaml.safe_load((REPO / "config/config.yaml").read_text()),
        REPO / "workflow/schemas/config.schema.yaml")) if run.startswith("es/")]
    assert planned_jobs(proc)["run_es"] == len(grid) == 21  # the whole default grid


def test_a_dataset_added_through_config_alone_runs_the_whole_chain(tmp_path, tiny_mirror,
                                                                   workflow_copy):
    mirror = tmp_path / "mirror"
    shutil.copytree(tiny_mirror, mirror)
    make_tiny_dataset(mirror, "tinyextra", channels=1, size=8, image_column="image", seed=3)
    config = tiny_config(mirror)
    config["datasets"]["tinyextra"] = {"hub_id": "test/tinyextra", "image_column": "image",
                                       "label_column": "label"}
    config["enabled_datasets"] = ["tinygray", "tinyextra"]
    config["es_grid"][0]["datasets"].append("tinyextra")
    config["ablation"] = []
    config["benchmark"] = {"encoders": ["repeat"], "population": 4, "batch": 4, "steps": 2,
                           "chunks": [2], "memory_chunks": [], "repeats": 1}
    work = tmp_path / "work"
    work.mkdir()
    run_snakemake(work, config, "all", "benchmark", snakefile=workflow_copy / "Snakefile")
    results = work / "results"
    for path in ("data/tinyextra/info.json", "subsets/tinyextra/big.json",
                 "baselines/cnn/tinyextra/small/metrics.json",
                 "baselines/bptt/tinyextra/repeat/big/metrics.json",
                 "checks/tinyextra/repeat.json",
                 "es/tinyextra/repeat/small/chunked/seed0/metrics.json"):
        assert (results / path).exists(), path
    runs = (results / "tables/es_runs.csv").read_text()
    assert "tinyextra,repeat,small,chunked,0" in runs
    throughput = (results / "tables/throughput.csv").read_text().splitlines()
    assert {line.split(",")[1] for line in throughput[1:]} == {"tinygray", "tinyextra"}
