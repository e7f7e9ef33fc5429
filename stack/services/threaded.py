"""Blocking model calls (Whisper, llama.cpp, Kokoro) off the event loop, for Pipecat services.

They run on a thread pool of their own (``MODEL_CALLS``), never on asyncio's default executor:
a model call can hold its thread for seconds, or wait there for an engine's lock, and the
default executor is where aiortc encodes every 10 ms of the bot's voice over SmallWebRTC (only
cpu count + 4 threads). A handful of conversations' model calls used to fill it, and the voice of
every direct connection stalled behind them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_DONE = object()

# Threads are made as calls need them; the bound only stops a runaway (each conversation holds
# at most one call per engine, and MAX_CONVERSATIONS is far below this).
MODEL_CALLS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="model-call")


async def call_in_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on a model-call thread (as ``asyncio.to_thread``, another pool)."""
    return await asyncio.get_running_loop().run_in_executor(
        MODEL_CALLS, lambda: fn(*args, **kwargs))


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

    loop.run_in_executor(MODEL_CALLS, produce)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
