"""Blocking model calls (llama.cpp, Kokoro) as async iterators for Pipecat services."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(make: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
    """Run ``make(stop)`` in a worker thread and yield its items on the event loop.

    When the consumer stops early (barge-in cancels it) ``stop`` is set and the thread is not
    waited for: the interruption moves on at once, and the thread ends after its current item
    (the engines' own locks keep the next request behind it)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def produce():
        try:
            for item in make(stop):
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except Exception as e:  # handed to the event loop, raised there
            loop.call_soon_threadsafe(queue.put_nowait, e)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    loop.run_in_executor(None, produce)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
