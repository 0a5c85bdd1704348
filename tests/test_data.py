"""The dataset loader on tiny Hub-schema parquet files, and its errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset
from snn_es.data import (
    MIRROR_ENV,
    DatasetSpec,
    DataSourceError,
    cache_dataset,
    load_cached_split,
    resolve_mirror,
)


def _cache(spec, mirror, tmp_path):
    outputs = {split: tmp_path / f"{split}.pt" for split in ("train", "test")}
    info = cache_dataset(spec, mirror, outputs, tmp_path / "info.json", progress=False)
    return info, {split: load_cached_split(p) for split, p in outputs.items()}


@pytest.mark.parametrize("channels,size,column", [(3, 8, "img"), (1, 6, "image")])
def test_cache_roundtrip_colour_and_grayscale(tmp_path, channels, size, column):
    mirror = tmp_path / "mirror"
    written, classes = make_tiny_dataset(mirror, "tiny", channels, size, column, seed=channels)
    spec = DatasetSpec(name="tiny", hub_id="test/tiny", image_column=column)
    info, cached = _cache(spec, mirror, tmp_path)
    for split, (images, labels) in written.items():
        got = cached[split]
        assert got["images"].dtype == torch.uint8 and got["labels"].dtype == torch.int64
        assert tuple(got["images"].shape) == (len(labels), channels, size, size)
        # PNG is lossless: the cached pixels are exactly the ones written.
        np.testing.assert_array_equal(got["images"].numpy(), images)
        np.testing.assert_array_equal(got["labels"].numpy(), labels)
        assert got["classes"] == classes
    assert info["image_shape"] == [channels, size, size]
    assert info["splits"]["train"]["num_images"] == 60


def test_cache_is_byte_reproducible(tmp_path, tiny_mirror):
    spec = DatasetSpec(name="tinyrgb", hub_id="test/tinyrgb", image_column="img")
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        _cache(spec, tiny_mirror, folder)
    for name in ("train.pt", "test.pt", "info.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_no_source_gives_one_clear_error_quickly(tmp_path, monkeypatch):
    # Point the Hub client at a closed local port: unreachable, like a cluster node.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = DatasetSpec(name="cifar10", hub_id="uoft-cs/cifar10", image_column="img")
    start = time.perf_counter()
    with pytest.raises(DataSourceError) as err:
        _cache(spec, None, tmp_path)
    assert time.perf_counter() - start < 60
    message = str(err.value)
    assert "cifar10" in message and "data_mirror" in message and MIRROR_ENV in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_mirror_without_the_dataset_names_it(tmp_path, tiny_mirror):
    spec = DatasetSpec(name="mnist", hub_id="ylecun/mnist")
    with pytest.raises(DataSourceError, match=r"mnist/train-\*\.parquet"):
        _cache(spec, tiny_mirror, tmp_path)
    assert not any(p.suffix in (".pt", ".json") for p in tmp_path.iterdir())


def test_wrong_image_column_is_named(tmp_path, tiny_mirror):
    spec = DatasetSpec(name="tinyrgb", hub_id="test/tinyrgb", image_column="image")
    with pytest.raises(DataSourceError, match="no column 'image'"):
        _cache(spec, tiny_mirror, tmp_path)


def test_mirror_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert resolve_mirror(None) is None
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "env"))
    assert resolve_mirror(None) == tmp_path / "env"
    assert resolve_mirror(str(tmp_path / "cfg")) == tmp_path / "cfg"  # config key wins
