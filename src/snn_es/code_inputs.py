"""The library modules a job script runs: its code inputs, derived from the import graph.

A rule's code inputs are every module of the package that its script imports, directly or
through other modules, at module level or inside a function, plus the ``__init__`` of each
package on the way. Snakemake compares them by checksum, so editing one reruns exactly the
jobs whose code it is, and no list of modules is ever written by hand.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "snn_es"


def _imported_names(source: Path) -> set[str]:
    """Dotted names a file imports anywhere in it; ``from a import b`` gives ``a`` and
    ``a.b`` (b may be a submodule)."""
    tree = ast.parse(source.read_text(), filename=str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ValueError(f"{source}:{node.lineno}: a relative import; the code "
                                 f"inputs are derived from absolute imports, so write "
                                 f"`from {PACKAGE}... import ...`")
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` in the package at ``root`` (None if it is not one)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def module_closure(script: Path, root: Path) -> tuple[Path, ...]:
    """Every package file ``script`` runs (sorted): the transitive import closure within the
    package at ``root``, with the ``__init__`` of every package a module sits in."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        names = _imported_names(todo.pop())
        for name in sorted(names):
            parts = name.split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ and then c
            for depth in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:depth]), root)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return tuple(sorted(seen))
