"""How the three engines of a process share the CPU's cores.

Each engine has a thread budget (``Settings.thread_budget``) that adds up to the cores, so that
several conversations at once do not oversubscribe them. But the two moments a person waits on,
transcribing the turn they just finished and making the first audio of the reply, mostly
happen while the other engines are idle or can wait, and the budget then leaves cores unused:
on 2 cores Kokoro makes a reply's first chunk in ~0.6 s on both instead of ~1.0 s on one, and
Whisper tiny.en a 3 s question in ~0.35 s instead of ~0.53 s. Such work asks ``urgent()``: it
gets all the cores ("wide") when no other engine work is running, and the LLM waits between
decode steps while it runs (the LLM's text is ahead of the voice anyway). On 2 cores Kokoro
with both cores while the LLM decodes beside it is slower (~1.2 s) than with one: without the
wait, wide would not pay.

The LLM never waits longer than ``max_llm_pause_s`` at a time; after such a wait it runs as long
again without waiting, so a stream of urgent work cannot starve it. Only on a CPU: on a GPU the
engines do not share cores this way (``enabled=False`` makes every call a no-op)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

MAX_LLM_PAUSE_S = 1.0


class CoreShare:
    def __init__(self, cores: int = 1, *, enabled: bool = True,
                 max_llm_pause_s: float = MAX_LLM_PAUSE_S):
        self.cores = cores
        self.enabled = enabled and cores > 1
        self.max_llm_pause_s = max_llm_pause_s
        self._cond = threading.Condition()
        self._running = 0  # STT and TTS calls in flight, wide or not
        self._wide = False
        self._llm_free_until = 0.0
        self.llm_waiting = False
        # What happened, for tests and metrics.
        self.wide_runs = 0
        self.llm_pauses = 0
        self.llm_paused_s = 0.0

    @contextmanager
    def urgent(self) -> Iterator[bool]:
        """Work a person waits on. Yields True if it may use all the cores: nothing else but the
        LLM runs, and the LLM waits until it is done."""
        with self._cond:
            wide = self.enabled and self._running == 0
            self._running += 1
            if wide:
                self._wide = True
                self.wide_runs += 1
        try:
            yield wide
        finally:
            with self._cond:
                self._running -= 1
                if wide:
                    self._wide = False
                self._cond.notify_all()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Other STT/TTS work (a later chunk of a reply): urgent work started meanwhile stays on
        its budget."""
        with self._cond:
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1

    def llm_step(self) -> None:
        """Called by the LLM before each decode step: returns once no wide work runs, or after
        ``max_llm_pause_s``."""
        if not self.enabled:
            return
        with self._cond:
            if not self._wide or time.monotonic() < self._llm_free_until:
                return
            started = time.monotonic()
            deadline = started + self.max_llm_pause_s
            self.llm_waiting = True
            while self._wide and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            self.llm_waiting = False
            now = time.monotonic()
            self.llm_pauses += 1
            self.llm_paused_s += now - started
            if self._wide:  # waited the longest allowed: now run as long without waiting
                self._llm_free_until = now + self.max_llm_pause_s
