"""Fixed, class-stratified, seeded subsets of the cached splits.

Each class gets its own permutation seeded by ``(seed, dataset, split, class)``; a subset of
size n takes the first k_c indices of class c's permutation, with k_c proportional to the
class's share of the split. The permutation does not depend on n, so a smaller subset is
contained in a larger one, and the same config gives byte-identical files on any machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from snn_es.data import load_cached_split, recorded_sha256
from snn_es.errors import UserError
from snn_es.io import (atomic_torch_save, atomic_write_json, load_verified, sha256_file,
                       sha256_tensor)
from snn_es.seeding import generator_from


class SubsetError(UserError, ValueError):
    """A subset that cannot be drawn from its split (too large, or a class too small)."""


def class_quotas(class_counts: list[int], size: int) -> list[int]:
    """Split ``size`` across classes in proportion to ``class_counts`` (largest remainder).

    Ties in the remainder go to the lower class id, so the result is deterministic.
    """
    total = sum(class_counts)
    if not 0 < size <= total:
        raise SubsetError(f"subset size {size} must be between 1 and the split size {total}")
    exact = [size * c / total for c in class_counts]
    quotas = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in order[: size - sum(quotas)]:
        quotas[c] += 1
    return quotas


def stratified_indices(
    labels: torch.Tensor, size: int, seed: int, dataset: str, split: str
) -> torch.Tensor:
    """Sorted int64 indices of a stratified subset of ``labels``."""
    num_classes = int(labels.max()) + 1
    members = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    quotas = class_quotas([len(m) for m in members], size)
    chosen = []
    for c, (idx, quota) in enumerate(zip(members, quotas)):
        perm = torch.randperm(len(idx), generator=generator_from(seed, dataset, split, c))
        chosen.append(idx[perm[:quota]])
    return torch.sort(torch.cat(chosen)).values


def materialize_subset(
    dataset: str,
    subset: str,
    sizes: dict[str, int],
    seed: int,
    cache_paths: dict[str, str | os.PathLike],
    tensor_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
) -> dict[str, Any]:
    """Select the subset from the cached splits and write its tensors and JSON manifest."""
    payload: dict[str, Any] = {}
    manifest: dict[str, Any] = {"dataset": dataset, "subset": subset, "seed": seed, "splits": {}}
    for split, size in sizes.items():
        cached = load_cached_split(cache_paths[split])
        available = cached["labels"].numel()
        if size > available:
            raise SubsetError(
                f"subsets.{subset}.{split} = {size} but dataset '{dataset}' has only "
                f"{available} {split} images; lower the subset size in the config."
            )
        idx = stratified_indices(cached["labels"], size, seed, dataset, split)
        images, labels = cached["images"][idx].contiguous(), cached["labels"][idx].contiguous()
        payload[f"{split}_images"], payload[f"{split}_labels"] = images, labels
        payload[f"{split}_indices"] = idx
        payload["classes"] = cached["classes"]
        counts = torch.bincount(labels, minlength=len(cached["classes"])).tolist()
        manifest["splits"][split] = {
            "size": size,
            "class_counts": dict(zip(cached["classes"], counts)),
            "indices_sha256": sha256_tensor(idx),
            "images_sha256": sha256_tensor(images),
            "labels_sha256": sha256_tensor(labels),
        }
    manifest["classes"] = payload["classes"]
    manifest["image_shape"] = list(payload["train_images"].shape[1:])
    atomic_torch_save(tensor_path, payload)
    manifest["file"] = Path(tensor_path).name
    manifest["file_sha256"] = sha256_file(tensor_path)
    atomic_write_json(manifest_path, manifest)
    return manifest


SUBSET_FIX = ("rerun the same snakemake command: it sees the damage and redraws the subset "
              "(rule materialize_subset)")


def subset_manifest_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def load_subset(path: str | os.PathLike) -> dict[str, Any]:
    """Read a subset written by :func:`materialize_subset`, checked against its manifest."""
    return load_verified(path, recorded_sha256(path, subset_manifest_path(path)), SUBSET_FIX)
