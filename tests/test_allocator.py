"""allocator.keep_freed_memory: large tensors come from malloc's heap, not fresh mmaps."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest
import torch

from snn_es.allocator import keep_freed_memory


class _MallInfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mmapped_bytes() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        pytest.skip("this C library has no mallinfo2")
    mallinfo2.restype = _MallInfo2
    return mallinfo2().hblkhd


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_large_tensor_is_no_longer_a_fresh_mapping():
    if not keep_freed_memory():
        pytest.skip("not glibc: nothing to set")
    before = _mmapped_bytes()
    tensor = torch.empty(20 * 2**20 // 4)  # 20 MB: above glibc's default threshold (128 KiB)
    assert _mmapped_bytes() - before < 2**20  # from the heap, reused after it is freed
    del tensor
