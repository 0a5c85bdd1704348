"""Glue between a Snakemake job and the library: logging, threads, clear failures.

It imports nothing else from the library, so it does not tie every rule to every module.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Iterator

import torch

from snn_es.errors import UserError

_terminal = None  # the job's real stderr while a Snakemake job body runs


def announce(line: str) -> None:
    """One line for the user: to stdout (the job's log) and, inside a job, to the terminal
    too, where Snakemake's own output would otherwise hide it (a resume, a damaged file)."""
    print(line, flush=True)
    if _terminal is not None:
        print(line, file=_terminal, flush=True)


@contextlib.contextmanager
def snakemake_job(snakemake) -> Iterator[None]:
    """Run a job body with stdout/stderr sent to the rule's log and torch using its threads.

    A ``UserError`` is written as one line to the log and to the terminal, and the job exits
    non-zero; Snakemake then removes the job's (atomically written) outputs.
    """
    global _terminal
    torch.set_num_threads(max(1, int(snakemake.threads)))
    terminal = _terminal = sys.stderr
    with open(snakemake.log[0], "w", buffering=1) as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                yield
            except UserError as exc:
                line = f"{type(exc).__name__}: {exc}"
                print(line, file=log)
                print(line, file=terminal)
                raise SystemExit(1) from None
            except BaseException:
                traceback.print_exc(file=log)  # the log holds the whole story
                raise
            finally:
                _terminal = None
