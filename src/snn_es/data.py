"""Datasets: Hugging Face Hub (or an offline parquet mirror) -> compact uint8 tensor caches.

A cached split is one ``torch.save`` file holding ``images`` (uint8 [N, C, H, W]),
``labels`` (int64 [N]) and ``classes`` (list of class names). Loading it takes well under a
second, so every later stage reads tensors and never touches parquet or PIL again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from tqdm.auto import tqdm

from snn_es.errors import UserError
from snn_es.io import atomic_torch_save, atomic_write_json, load_verified, sha256_file, sha256_tensor

MIRROR_ENV = "SNN_ES_DATA_MIRROR"
SPLITS = ("train", "test")

# Fail fast when the Hub is unreachable instead of retrying for minutes. These are read
# when huggingface_hub is imported, so they are set before the import in _load_split.
_HUB_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": "10", "HF_HUB_DOWNLOAD_TIMEOUT": "10"}


class DataSourceError(UserError, RuntimeError):
    """No source (Hub or mirror) could provide a dataset. The message says how to fix it."""


@dataclass(frozen=True)
class DatasetSpec:
    """One image-classification dataset as named in the config's ``datasets`` section."""

    name: str
    hub_id: str
    image_column: str = "image"
    label_column: str = "label"
    hub_config: str | None = None
    train_split: str = "train"
    test_split: str = "test"

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any]) -> "DatasetSpec":
        keys = ("hub_id", "image_column", "label_column", "hub_config", "train_split", "test_split")
        return cls(name=name, **{k: entry[k] for k in keys if k in entry})

    def hub_split(self, split: str) -> str:
        return {"train": self.train_split, "test": self.test_split}[split]


def resolve_mirror(config_value: str | None) -> Path | None:
    """The offline mirror folder: the config key ``data_mirror`` first, then $SNN_ES_DATA_MIRROR."""
    value = config_value or os.environ.get(MIRROR_ENV) or None
    return Path(value).expanduser().resolve() if value else None


def _fix_hint(spec: DatasetSpec) -> str:
    return (
        f"Fix: either give this machine access to the Hugging Face Hub, or point the pipeline "
        f"at an offline mirror holding {spec.name}/{{train,test}}-*.parquet (the Hub's parquet "
        f"layout) with the config key `data_mirror: /path/to/mirror` or the environment "
        f"variable {MIRROR_ENV}=/path/to/mirror."
    )


def mirror_files(spec: DatasetSpec, mirror: Path, split: str) -> list[str]:
    """Parquet shards of one split in the mirror, or a DataSourceError naming what is missing."""
    folder = mirror / spec.name
    files = sorted(str(p) for p in folder.glob(f"{split}-*.parquet"))
    if not files:
        raise DataSourceError(
            f"Cannot load dataset '{spec.name}': the offline mirror {mirror} has no "
            f"{spec.name}/{split}-*.parquet. " + _fix_hint(spec)
        )
    return files


def _load_split(spec: DatasetSpec, split: str, mirror: Path | None, scratch: Path):
    """Open one split as a ``datasets.Dataset`` from the mirror or the Hub."""
    for key, value in _HUB_TIMEOUTS.items():
        os.environ.setdefault(key, value)
    import datasets  # imported late so the timeouts above take effect

    datasets.disable_progress_bars()
    if mirror is not None:
        files = mirror_files(spec, mirror, split)
        try:
            return datasets.load_dataset(
                "parquet", data_files={split: files}, split=split, cache_dir=str(scratch)
            )
        except Exception as exc:  # a corrupt or foreign parquet file
            raise DataSourceError(
                f"Cannot load dataset '{spec.name}' from the offline mirror {mirror}: "
                f"{type(exc).__name__}: {exc}. " + _fix_hint(spec)
            ) from exc
    unreachable = _hub_unreachable_reason()
    if unreachable:
        raise DataSourceError(
            f"Cannot load dataset '{spec.name}' from the Hugging Face Hub ({spec.hub_id}): "
            f"{unreachable}, and no offline mirror is set. " + _fix_hint(spec)
        )
    try:
        return datasets.load_dataset(
            spec.hub_id, spec.hub_config, split=spec.hub_split(split)
        )
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise DataSourceError(
            f"Cannot load dataset '{spec.name}' from the Hugging Face Hub ({spec.hub_id}): "
            f"{type(exc).__name__}: {reason}. No offline mirror is set. " + _fix_hint(spec)
        ) from exc


def _hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the Hub endpoint cannot be reached (one DNS lookup + TCP connect), or None.

    ``datasets`` retries an unreachable Hub with back-off for tens of seconds; probing once
    first lets an offline machine fail within seconds.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None  # offline mode: datasets serves the local Hub cache, if any
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"{endpoint.geturl()} is unreachable ({exc})"
    return None


def _class_names(ds, label_column: str, labels: np.ndarray) -> list[str]:
    feature = ds.features.get(label_column)
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    return [str(v) for v in range(int(labels.max()) + 1)]


def _to_array(image, channels: int) -> np.ndarray:
    """One PIL image -> uint8 [C, H, W] with the dataset's channel count."""
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def dataset_to_tensors(ds, spec: DatasetSpec, progress: bool = True) -> dict[str, Any]:
    """Decode every image of a ``datasets.Dataset`` into the cache layout."""
    for column in (spec.image_column, spec.label_column):
        if column not in ds.column_names:
            raise DataSourceError(
                f"Dataset '{spec.name}' has no column '{column}' (columns: {ds.column_names}). "
                f"Fix the dataset's image_column / label_column in the config."
            )
    labels = np.asarray(ds[spec.label_column], dtype=np.int64)
    first = ds[0][spec.image_column]
    channels = 1 if first.mode in ("L", "1", "I", "I;16", "F") else 3
    height, width = first.size[1], first.size[0]
    images = np.empty((len(ds), channels, height, width), dtype=np.uint8)
    rows = ds.select_columns([spec.image_column])
    for i, row in enumerate(
        tqdm(rows, total=len(ds), desc=f"decode {spec.name}", disable=not progress, mininterval=2)
    ):
        array = _to_array(row[spec.image_column], channels)
        if array.shape != images.shape[1:]:
            raise DataSourceError(
                f"Dataset '{spec.name}': image {i} has shape {array.shape}, expected "
                f"{images.shape[1:]}; all images of a dataset must share one size."
            )
        images[i] = array
    return {
        "images": torch.from_numpy(images),
        "labels": torch.from_numpy(labels),
        "classes": _class_names(ds, spec.label_column, labels),
    }


def cache_dataset(
    spec: DatasetSpec,
    mirror: Path | None,
    outputs: dict[str, str | os.PathLike],
    info_path: str | os.PathLike,
    progress: bool = True,
) -> dict[str, Any]:
    """Load both splits and write ``outputs[split]`` tensor files plus an info JSON.

    Every file is written atomically and only after both splits loaded, so a failure leaves
    nothing behind.
    """
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f"snn_es_{spec.name}_"))
    try:
        cached = {}
        for split in SPLITS:
            ds = _load_split(spec, split, mirror, scratch)
            cached[split] = dataset_to_tensors(ds, spec, progress=progress)
            del ds
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if cached["train"]["classes"] != cached["test"]["classes"]:
        raise DataSourceError(f"Dataset '{spec.name}': train and test class names differ.")
    for split in SPLITS:
        atomic_torch_save(outputs[split], cached[split])
    info = {
        "dataset": spec.name,
        "source": str(mirror / spec.name) if mirror is not None else f"hub:{spec.hub_id}",
        "classes": cached["train"]["classes"],
        "image_shape": list(cached["train"]["images"].shape[1:]),
        "splits": {
            split: {
                "num_images": int(cached[split]["labels"].numel()),
                "file": Path(outputs[split]).name,
                "file_sha256": sha256_file(outputs[split]),
                "images_sha256": sha256_tensor(cached[split]["images"]),
                "labels_sha256": sha256_tensor(cached[split]["labels"]),
            }
            for split in SPLITS
        },
    }
    atomic_write_json(info_path, info)
    # Timing goes to the log, not the info file, so the info file is byte-reproducible.
    print(f"cached {spec.name} in {time.perf_counter() - start:.1f} s from {info['source']}")
    return info


CACHE_FIX = ("rerun the same snakemake command: it sees the damage and rebuilds the file "
             "(rule cache_dataset)")


def recorded_sha256(path: str | os.PathLike, record: str | os.PathLike) -> str | None:
    """The sha256 that a cache's info.json or a subset's manifest records for ``path``
    (None when the record is missing or unreadable: the file is then only checked by loading)."""
    try:
        entry = json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return None
    entries = [entry, *entry.get("splits", {}).values()]  # a subset manifest, a cache's splits
    return next((e.get("file_sha256") for e in entries if e.get("file") == Path(path).name), None)


def cache_info_path(path: str | os.PathLike) -> Path:
    return Path(path).with_name("info.json")


def load_cached_split(path: str | os.PathLike) -> dict[str, Any]:
    """Read a split written by :func:`cache_dataset`, checked against its info.json."""
    return load_verified(path, recorded_sha256(path, cache_info_path(path)), CACHE_FIX)
