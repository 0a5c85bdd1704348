"""Small file helpers: atomic writes (nothing half-written is ever left behind) and hashing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from snn_es.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


class DamagedFileError(UserError, RuntimeError):
    """A file on disk does not hold what its record says it holds (truncated, garbled)."""


class WriteFailedError(UserError, OSError):
    """A file could not be written (disk full, file too large); the previous file is kept."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A crash or a kill mid-write leaves either the old file or no file, never a partial one;
    a failed write (disk full) says so in one line and keeps the old file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        kept = "The previous file is intact." if path.exists() else "Nothing was written."
        raise WriteFailedError(
            f"cannot write {path} ({len(data)} bytes): {exc.strerror or exc}. {kept} Fix: free "
            f"disk space (or raise the file-size limit) and rerun.") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON with sorted keys and a trailing newline, so equal content gives equal bytes."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def tensors_to_bytes(obj: Any) -> bytes:
    """Serialise with ``torch.save`` into memory.

    Saving to a buffer (not to the temp path) keeps the archive's internal name fixed,
    so the same tensors always give the same bytes.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, tensors_to_bytes(obj))


def torch_load(path: str | os.PathLike) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def file_problem(path: str | os.PathLike, expected_sha256: str | None) -> str | None:
    """Why ``path`` is not the file its record describes ("is missing", "is damaged: ..."),
    or None when it is."""
    path = Path(path)
    if not path.is_file():
        return "is missing"
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        return (f"is damaged: its sha256 does not match the one recorded when it was written "
                f"({path.stat().st_size} bytes now)")
    return None


def load_verified(path: str | os.PathLike, expected_sha256: str | None, fix: str) -> Any:
    """``torch_load`` a file after checking it against its recorded sha256 (None: unchecked).

    A mismatch, or a file torch cannot read, is one ``DamagedFileError`` naming the file and
    ``fix``, never a raw unpickling traceback.
    """
    problem = file_problem(path, expected_sha256)
    if problem is None:
        try:
            return torch_load(path)
        except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
            reason = (str(exc).splitlines() or [""])[0]
            problem = f"is damaged: torch cannot read it ({type(exc).__name__}: {reason})"
    raise DamagedFileError(f"{path} {problem}. Fix: {fix}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tensor(tensor: torch.Tensor) -> str:
    """Hash of a tensor's dtype, shape and contiguous bytes."""
    tensor = tensor.detach().cpu().contiguous()
    header = f"{tensor.dtype}|{tuple(tensor.shape)}|".encode()
    return hashlib.sha256(header + tensor.numpy().tobytes()).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
