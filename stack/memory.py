"""Keeping the bot process's memory flat over many conversations (glibc's allocator).

Measured with ``scripts/bench.py --soak``: Python objects do not pile up between sessions, but
resident memory grew by about 3 MB per conversation. The growth was glibc's: every thread that
allocates (ONNX Runtime, CTranslate2, llama.cpp, LiveKit's audio, the executor threads) gets an
arena of its own, freed blocks stay scattered over them, and little goes back to the system. Two
arenas and a trim after each session keep it flat (see docs/benchmarks.md). Elsewhere than glibc
both are no-ops.

Python's own collector: with the models loaded the process holds ~330 000 tracked objects, and a
full collection walks them all, 160 ms with every thread that needs the GIL stopped, the event
loop included (the bot's voice over SmallWebRTC, every message). They live as long as the
process: ``freeze_loaded_objects`` takes them out of the collector's walks once they are loaded."""

from __future__ import annotations

import ctypes
import gc

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def limit_arenas(arenas: int = ARENAS) -> None:
    """At most ``arenas`` malloc arenas for threads started from now on (as MALLOC_ARENA_MAX):
    call first thing, before the models start their threads."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_ARENA_MAX, arenas)


def return_freed_memory() -> None:
    """Give the free memory at the top of the heaps back to the system (after a session)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def freeze_loaded_objects() -> None:
    """Once the models are loaded: what exists now is kept for the process's life, so the
    cyclic collector no longer walks it (a full collection went from 160 ms to under 1)."""
    gc.collect()
    gc.freeze()
