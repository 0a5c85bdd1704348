"""Aggregation into tables, plots and the manifest, on small synthetic run outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from snn_es import report


def _write(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)


@pytest.fixture
def fake_results(tmp_path):
    es, cnn, bptt, checks = [], [], [], []
    for encoder, acc in (("poisson", 0.2), ("repeat", 0.3)):
        for mode, wall in (("sequential", 50.0), ("chunked", 20.0)):
            run = tmp_path / f"results/es/cifar10/{encoder}/big/{mode}/seed0"
            log = "generation,fitness_mean,test_acc\n0,-2.3,\n1,-2.2,%s\n" % acc
            _write(run / "log.csv", log)
            es.append(_write(run / "metrics.json", {
                "generations": 2, "evaluations": 64, "final_test_acc": acc,
                "best_test_acc": acc, "final_train_acc": acc + 0.05, "wall_s": wall,
                "member_evals_per_s": 100.0, "config": {}}))
        bptt.append(_write(tmp_path / f"results/baselines/bptt/cifar10/{encoder}/big/metrics.json",
                           {"test_acc": 0.4, "train_acc": 0.5}))
        checks.append(_write(tmp_path / f"results/checks/cifar10/{encoder}.json", {
            "dataset": "cifar10", "encoder": encoder, "loss": 2.3, "logit_std_across_inputs": 0.1,
            "spike_rates": {"lif1": 0.1, "lif2": 0.05, "lif_out": 0.0}}))
    cnn.append(_write(tmp_path / "results/baselines/cnn/cifar10/big/metrics.json",
                      {"test_acc": 0.5, "train_acc": 0.7}))
    return tmp_path, es, cnn, bptt, checks


def test_tables_have_the_published_columns_and_rows(fake_results):
    _, es, cnn, bptt, checks = fake_results
    runs, timing = report.es_tables(es)
    assert list(runs.columns) == report.ES_RUN_COLUMNS and len(runs) == 4
    assert list(timing.columns) == report.ES_TIMING_COLUMNS
    assert "wall_s" not in runs.columns  # accuracy tables carry no timings
    row = runs[(runs.encoder == "repeat") & (runs["mode"] == "chunked")].iloc[0]
    assert row.final_test_acc == 0.3 and row.seed == 0 and row.subset == "big"
    baselines = report.baseline_table(cnn, bptt)
    assert list(baselines.columns) == report.BASELINE_COLUMNS
    assert sorted(baselines.model) == ["cnn", "snn_bptt", "snn_bptt"]
    table = report.checks_table(checks)
    assert {"spike_rate_lif1", "spike_rate_lif_out"} <= set(table.columns) and len(table) == 2


def test_plots_and_csv_are_byte_reproducible(fake_results, tmp_path):
    _, es, cnn, bptt, _ = fake_results
    runs, timing = report.es_tables(es)
    baselines = report.baseline_table(cnn, bptt)
    outputs = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        folder.mkdir()
        report.write_csv(runs, folder / "es_runs.csv")
        report.plot_learning_curves(es, folder / "curves.png")
        report.plot_repeat_control(es, folder / "control.png")
        report.plot_mode_timing(timing, folder / "timing.png")
        report.plot_accuracy_comparison(runs, baselines, folder / "accuracy.png")
        outputs.append({p.name: p.read_bytes() for p in folder.iterdir()})
    assert outputs[0] == outputs[1]
    assert outputs[0]["curves.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(tmp_path / "a" / "es_runs.csv").shape == (4, len(report.ES_RUN_COLUMNS))


def test_manifest_lists_hash_size_and_rule(fake_results, tmp_path):
    _, es, cnn, _, _ = fake_results
    entries = [(es[0], "run_es"), (cnn[0], "train_cnn")]
    report.write_manifest(entries, tmp_path / "m1.tsv")
    report.write_manifest(list(reversed(entries)), tmp_path / "m2.tsv")
    assert (tmp_path / "m1.tsv").read_bytes() == (tmp_path / "m2.tsv").read_bytes()
    lines = (tmp_path / "m1.tsv").read_text().splitlines()
    assert lines[0] == "path\tsha256\tbytes\trule" and len(lines) == 3
    path, digest, size, rule = lines[1].split("\t")
    assert len(digest) == 64 and int(size) == Path(path).stat().st_size
    assert rule in ("run_es", "train_cnn")
