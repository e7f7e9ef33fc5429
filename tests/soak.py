"""Join/leave cycles through a real LiveKit server, measuring what the bot process keeps.

Used by the test suite (a short run) and by ``scripts/bench.py --soak N`` (the figures in
docs/benchmarks.md). Each cycle starts a conversation, speaks a short question and leaves: odd
cycles as soon as the bot's voice is heard (mid-reply), even ones after the reply. The bot and
the client share this process, so the figures are an upper bound for the bot alone.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lk_client import Client, wait_until


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sample:
    cycle: int
    rss_mb: float
    threads: int
    tasks: int


async def soak(cycles: int, start: Callable[[], Awaitable[tuple[str, str, str]]],
               active_rooms: Callable[[], list[str]], question: np.ndarray,
               on_sample: Callable[[Sample], None] = lambda s: None) -> list[Sample]:
    """``start()`` opens a conversation and returns (url, token, room). One ``Sample`` per
    cycle, taken once the cycle's session has ended."""
    samples = []
    for cycle in range(1, cycles + 1):
        url, token, room = await start()
        client = Client()
        await client.join(url, token)
        await client.silence(0.3)
        await client.speak(question, trailing_s=0.5)
        got = client.got
        heard = await wait_until(lambda: got.voiced(), timeout=60)  # noqa: B023 (awaited here)
        if heard and cycle % 2 == 0:  # hear the reply out: quiet for a second after voice
            await wait_until(lambda: time.monotonic() - got.last_voiced() > 1.0,  # noqa: B023
                             timeout=30)
        await client.leave()
        if not await wait_until(lambda: room not in active_rooms(), 30):  # noqa: B023
            raise AssertionError(f"cycle {cycle}: the session of room {room} did not end")
        gc.collect()
        sample = Sample(cycle, rss_mb(), threading.active_count(), len(asyncio.all_tasks()))
        samples.append(sample)
        on_sample(sample)
    return samples


def summary(samples: list[Sample], baseline_cycle: int = 20) -> dict:
    """RSS, threads and tasks at the baseline cycle, at their maximum after it, and at the end."""
    base = next(s for s in samples if s.cycle == baseline_cycle)
    after = [s for s in samples if s.cycle >= baseline_cycle]
    end = samples[-1]
    return {
        "cycles": end.cycle,
        "rss_base": base.rss_mb, "rss_max": max(s.rss_mb for s in after), "rss_end": end.rss_mb,
        "threads_base": base.threads, "threads_max": max(s.threads for s in after),
        "threads_end": end.threads,
        "tasks_base": base.tasks, "tasks_max": max(s.tasks for s in after), "tasks_end": end.tasks,
    }
