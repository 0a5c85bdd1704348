"""Integration checks of the real CIFAR-10 and MNIST mirrors (skipped without SNN_ES_DATA_MIRROR)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from snn_es.data import MIRROR_ENV, DatasetSpec, _load_split, dataset_to_tensors, resolve_mirror

pytestmark = [
    pytest.mark.mirror,
    pytest.mark.skipif(not os.environ.get(MIRROR_ENV), reason=f"{MIRROR_ENV} is not set"),
]

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
EXPECTED = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_splits(name):
    spec = DatasetSpec.from_config(name, CONFIG["datasets"][name])
    scratch = Path(tempfile.mkdtemp())
    try:
        for split in ("train", "test"):
            ds = _load_split(spec, split, resolve_mirror(None), scratch)
            assert len(ds) == CONFIG["datasets"][name]["split_sizes"][split]
            head = dataset_to_tensors(ds.select(range(64)), spec, progress=False)
            assert tuple(head["images"].shape) == (64, *EXPECTED[name])
            assert len(head["classes"]) == 10
            assert set(ds.unique(spec.label_column)) == set(range(10))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
