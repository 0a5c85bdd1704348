"""Shared fixtures: tiny Hub-schema parquet mirrors and a helper to run the real Snakefile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


# torch.compile costs seconds per kernel and input shape: the unit tests and the pipeline
# runs they start use the eager kernels; tests of the compiled path switch it back on.
os.environ.setdefault("SNN_ES_COMPILE", "0")


@pytest.fixture
def compiled_kernels(monkeypatch):
    monkeypatch.setenv("SNN_ES_COMPILE", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors on a shared 2-core machine: thread start-up and contention cost more
    than parallelism saves (subprocess runs of the pipeline are not affected)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
SNAKEFILE = REPO / "Snakefile"


def write_hub_parquet(folder: Path, name: str, split: str, images: np.ndarray, labels, classes,
                      image_column: str) -> Path:
    """Write one split in the Hub's parquet layout (Image + ClassLabel features in metadata)."""
    import datasets
    from PIL import Image

    features = datasets.Features(
        {image_column: datasets.Image(), "label": datasets.ClassLabel(names=list(classes))}
    )
    # images are [N, C, H, W]; PIL wants [H, W] (grayscale) or [H, W, 3] (RGB)
    pil = [Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
           for img in images]
    ds = datasets.Dataset.from_dict({image_column: pil, "label": list(labels)}, features=features)
    path = folder / name / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def make_images(rng: np.random.Generator, n: int, channels: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


def make_tiny_dataset(mirror: Path, name: str, channels: int, size: int, image_column: str,
                      num_train: int = 60, num_test: int = 30, num_classes: int = 3, seed: int = 0):
    """A tiny colour or grayscale dataset; returns the arrays written, per split."""
    rng = np.random.default_rng(seed)
    classes = [f"class_{c}" for c in range(num_classes)]
    written = {}
    for split, n in (("train", num_train), ("test", num_test)):
        images = make_images(rng, n, channels, size)
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        write_hub_parquet(mirror, name, split, images, labels, classes, image_column)
        written[split] = (images, labels)
    return written, classes


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory) -> Path:
    """A mirror with one colour dataset ('tinyrgb', 3x8x8) and one grayscale ('tinygray', 1x6x6)."""
    mirror = tmp_path_factory.mktemp("mirror")
    make_tiny_dataset(mirror, "tinyrgb", channels=3, size=8, image_column="img", seed=1)
    make_tiny_dataset(mirror, "tinygray", channels=1, size=6, image_column="image", seed=2)
    return mirror


def tiny_config(mirror: Path) -> dict:
    return {
        "data_mirror": str(mirror),
        "seed": 0,
        "datasets": {
            "tinyrgb": {"hub_id": "test/tinyrgb", "image_column": "img", "label_column": "label",
                        "split_sizes": {"train": 60, "test": 30}},
            "tinygray": {"hub_id": "test/tinygray", "image_column": "image",
                         "label_column": "label"},
        },
        "enabled_datasets": ["tinyrgb", "tinygray"],
        "subsets": {"small": {"train": 12, "test": 6}, "big": {"train": 24, "test": 12}},
        "encoders": ["repeat"],
        # Every stage on a budget of seconds: the point is that the real rules run.
        "snn": {"channels": [2], "kernel_size": 3, "num_steps": 2, "beta": 0.9,
                "threshold": 0.5, "reset_mechanism": "subtract", "surrogate": "atan",
                "readout": "membrane"},
        "cnn": {"epochs": 1, "batch_size": 8, "lr": 0.001},
        "bptt": {"epochs": 1, "batch_size": 8, "lr": 0.001},
        "forward_check": {"batch_size": 6},
        "es": {"generations": 2, "population": 4, "batch_size": 4, "sigma": 0.02, "lr": 0.01,
               "eval_every": 1, "readout_population": 4, "readout_batch_size": 6},
        "execution": {"chunk_size": 2, "checkpoint_every": 1},
        "es_grid": [{"datasets": ["tinygray"], "encoders": ["repeat"], "subsets": ["small"],
                     "modes": ["chunked"], "seeds": [0]},
                    {"datasets": ["tinygray"], "encoders": ["repeat"], "subsets": ["small"],
                     "modes": ["sequential"], "seeds": [0], "es": {"lr": 0.02}}],
        "ablation": [{"study": "tiny", "dataset": "tinygray", "encoder": "repeat",
                      "subset": "small", "seeds": [0], "base": {"es": {"lr": 0.05}},
                      "variants": {"base": {},
                                   "rank1_margin": {"es": {"rank": 1, "fitness": "margin"},
                                                    "snn": {"num_steps": 3}}}}],
        "scaling": {"cells": [{"dataset": "tinygray", "encoder": "repeat"}],
                    "allocations": {"p4_b4": {"population": 4, "batch_size": 4}},
                    "budgets": [16, 32], "seeds": [0], "subset": "small"},
    }


def run_snakemake(workdir: Path, config: dict, *args: str, check: bool = True,
                  snakefile: Path = SNAKEFILE, sort_keys: bool = True) -> subprocess.CompletedProcess:
    """Run the real Snakefile in ``workdir`` with ``config`` as its only config file
    (written with sorted keys unless ``sort_keys=False``: then in the dict's own order)."""
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=sort_keys))
    env = {k: v for k, v in os.environ.items() if k != "SNN_ES_DATA_MIRROR"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir),
           "--configfile", str(config_path), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def reversed_keys(value):
    """Every mapping's keys in reverse order, recursively (lists keep their order)."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule from a (dry-)run's 'Job stats' table; {} when nothing is to be done."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts
