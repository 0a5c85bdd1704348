"""Glue between a Snakemake job and the library: logging, threads, clear failures."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch

from snn_es.config import ConfigError
from snn_es.data import DataSourceError
from snn_es.subsets import SubsetError

# Errors whose message already says what is wrong and how to fix it: no traceback needed.
USER_ERRORS = (ConfigError, DataSourceError, SubsetError)


@contextlib.contextmanager
def snakemake_job(snakemake) -> Iterator[None]:
    """Run a job body with stdout/stderr sent to the rule's log and torch using its threads.

    A known user error is written as one line to the log and to the terminal, and the job
    exits non-zero; Snakemake then removes the job's (atomically written) outputs.
    """
    torch.set_num_threads(max(1, int(snakemake.threads)))
    terminal = sys.stderr
    with open(snakemake.log[0], "w", buffering=1) as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                yield
            except USER_ERRORS as exc:
                line = f"{type(exc).__name__}: {exc}"
                print(line, file=log)
                print(line, file=terminal)
                raise SystemExit(1) from None
