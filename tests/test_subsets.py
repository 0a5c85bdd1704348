"""Subset selection: stratified, seeded, nested, byte-identical across reruns."""

from __future__ import annotations

import pytest
import torch

from snn_es.io import atomic_torch_save
from snn_es.subsets import SubsetError, class_quotas, materialize_subset, stratified_indices


def test_class_quotas_are_proportional_and_sum_to_size():
    assert class_quotas([100, 100, 100], 30) == [10, 10, 10]
    assert class_quotas([100, 100, 100], 31) == [11, 10, 10]  # remainder to the lowest id
    assert class_quotas([600, 300, 100], 10) == [6, 3, 1]
    assert sum(class_quotas([5421, 6742, 5958], 512)) == 512
    with pytest.raises(SubsetError):
        class_quotas([3, 3], 7)


def test_stratified_indices_are_stratified_unique_and_nested():
    labels = torch.arange(1000) % 10
    small = stratified_indices(labels, 100, seed=0, dataset="d", split="train")
    big = stratified_indices(labels, 300, seed=0, dataset="d", split="train")
    assert torch.equal(torch.bincount(labels[small], minlength=10), torch.full((10,), 10))
    assert len(set(small.tolist())) == 100
    assert set(small.tolist()) <= set(big.tolist())  # a smaller subset nests in a larger one
    again = stratified_indices(labels, 100, seed=0, dataset="d", split="train")
    other = stratified_indices(labels, 100, seed=1, dataset="d", split="train")
    assert torch.equal(small, again) and not torch.equal(small, other)


@pytest.fixture
def cached_splits(tmp_path):
    gen = torch.Generator().manual_seed(0)
    paths = {}
    for split, n in (("train", 200), ("test", 100)):
        data = {
            "images": torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=gen),
            "labels": torch.arange(n) % 4,
            "classes": ["a", "b", "c", "d"],
        }
        paths[split] = tmp_path / f"{split}.pt"
        atomic_torch_save(paths[split], data)
    return paths


def test_materialize_is_byte_identical_and_stratified(tmp_path, cached_splits):
    outs = []
    for run in ("one", "two"):
        tensors, manifest = tmp_path / run / "s.pt", tmp_path / run / "s.json"
        info = materialize_subset("d", "s", {"train": 40, "test": 20}, 7, cached_splits,
                                  tensors, manifest)
        outs.append((tensors.read_bytes(), manifest.read_bytes()))
    assert outs[0] == outs[1]
    assert info["splits"]["train"]["class_counts"] == {"a": 10, "b": 10, "c": 10, "d": 10}
    assert info["splits"]["test"]["size"] == 20 and info["seed"] == 7


def test_subset_larger_than_split_is_a_clear_error(tmp_path, cached_splits):
    with pytest.raises(SubsetError, match=r"subsets.s.test = 500 .* only 100 test images"):
        materialize_subset("d", "s", {"train": 40, "test": 500}, 0, cached_splits,
                           tmp_path / "s.pt", tmp_path / "s.json")
    assert not (tmp_path / "s.pt").exists() and not (tmp_path / "s.json").exists()
