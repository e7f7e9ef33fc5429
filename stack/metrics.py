"""Metrics for operators: ``GET /metrics`` in Prometheus' text format (prometheus-client).

What a person waits for is measured where the bot sees it: voice to voice (the user stopped
speaking → the bot's first audio leaves), and the stages inside it (Whisper's processing, the
LLM's first token, Kokoro's first audio), all as histograms per process. Conversations active,
started and refused; turns; errors by the service that raised them. The LLM engine's own
counters (tokens generated, prompt tokens read or found cached, decode steps and the sequences
they carried, queue waits) and Kokoro's (chunks, waits for a worker, synthesis time, audio made)
are read from the engines at scrape time, so the engines need no metrics library. The event
loop's lag (how late a 20 ms timer fires) says when the process is too busy to keep its
conversations' audio and messages on time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # *_created series: noise for a dashboard
REGISTRY = CollectorRegistry()  # ours alone: tests and scrapes see only these

_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)

CONVERSATIONS_ACTIVE = Gauge("avatar_conversations_active", "Conversations under way now.",
                             registry=REGISTRY)
CONVERSATIONS_STARTED = Counter("avatar_conversations_started", "Conversations started.",
                                registry=REGISTRY)
CONVERSATIONS_REFUSED = Counter(
    "avatar_conversations_refused", "Token requests answered 503: busy (MAX_CONVERSATIONS "
    "reached) or loading (models not loaded).", ["reason"], registry=REGISTRY)
TURNS = Counter("avatar_turns", "Turns (a user's speech and the bot's answer), by whether the "
                "user interrupted the answer.", ["interrupted"], registry=REGISTRY)
VOICE_TO_VOICE = Histogram(
    "avatar_voice_to_voice_seconds", "From the end of the user's speech (VAD) to the bot "
    "starting to speak, as the bot sees it.", buckets=_LATENCY_BUCKETS, registry=REGISTRY)
STAGE = Histogram(
    "avatar_stage_seconds", "Each stage of an answer: stt (Whisper's processing of a "
    "segment), llm_first_token, tts_first_audio.", ["stage"], buckets=_LATENCY_BUCKETS,
    registry=REGISTRY)
TTS_GAPS = Histogram(
    "avatar_tts_gap_seconds", "Per answer: how long its voice stopped mid-answer because "
    "synthesis fell behind playback (0 for most answers; a machine too slow for its profile "
    "shows here).", buckets=(0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0), registry=REGISTRY)
ERRORS = Counter("avatar_errors", "Errors reported in a conversation, by the service that "
                 "reported them (stt, llm, tts, other).", ["source"], registry=REGISTRY)
LLM_LOOPS = Counter(
    "avatar_llm_loops", "Answers the bot cut short because the LLM kept repeating the same "
    "words (many here: the model, its quantisation or its temperature needs a look).",
    registry=REGISTRY)


EVENT_LOOP_LAG = Histogram(
    "avatar_event_loop_lag_seconds", "How late the bot's event loop ran a 20 ms timer. Every "
    "conversation's frames and messages pass through this loop, and over SmallWebRTC it also "
    "paces the bot's voice: lags of tens of ms send that voice in bursts the browser must "
    "absorb (a machine too busy for its conversations shows here first).",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0), registry=REGISTRY)
LAG_INTERVAL_S = 0.02


async def watch_event_loop() -> None:
    """Observe EVENT_LOOP_LAG until cancelled (the server runs it for its lifetime)."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(LAG_INTERVAL_S)
        EVENT_LOOP_LAG.observe(max(0.0, loop.time() - start - LAG_INTERVAL_S))


BUSY_WARN = 0.9  # an engine's workers busy this share of the window: the box is full
CAPACITY_WINDOW_S = 60.0
CAPACITY_WARN_EVERY_S = 600.0


class CapacityWatch:
    """Says in the log when the box has no speech synthesis or LLM time to spare: Kokoro's
    workers (TTS_WORKERS) or the LLM's decode thread busy ``BUSY_WARN`` of the last minute while
    conversations went on. Then a reply's first words wait for the engine and its voice may
    pause mid-answer, whatever the queue's order; an operator without a Prometheus learns it
    here, with what to change (at most once per ``CAPACITY_WARN_EVERY_S``, per engine).
    ``check()`` runs every few seconds (``watch_capacity``); ``clock`` is time.monotonic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._samples: dict[str, list[tuple[float, float]]] = {"tts": [], "llm": []}
        self._warned: dict[str, float] = {}

    def _busy(self) -> dict[str, tuple[float, int]]:
        """Per engine: its busy seconds so far, and how many work at once."""
        busy = {}
        tts = getattr(_TTS.engine, "stats", None)
        if tts is not None:
            busy["tts"] = (sum(tts.synthesis_seconds.values()), getattr(_TTS.engine, "workers", 1))
        llm = getattr(_LLM.engine, "stats", None)
        if llm is not None:
            busy["llm"] = (llm.decode_seconds, 1)
        return busy

    def check(self) -> list[str]:
        """Log (and return) a warning per engine that was too busy over the last window."""
        now, said = self._clock(), []
        active = int(CONVERSATIONS_ACTIVE.collect()[0].samples[0].value)
        for name, (seconds, workers) in self._busy().items():
            samples = self._samples[name]
            samples.append((now, seconds))
            while len(samples) > 2 and now - samples[1][0] >= CAPACITY_WINDOW_S:
                samples.pop(0)  # keep one sample at least a window old
            then, before = samples[0]
            if now - then < CAPACITY_WINDOW_S or active == 0:
                continue
            share = (seconds - before) / ((now - then) * max(1, workers))
            if share < BUSY_WARN or now - self._warned.get(name, -1e18) < CAPACITY_WARN_EVERY_S:
                continue
            self._warned[name] = now
            said.append(_CAPACITY_ADVICE[name].format(
                share=share, window=now - then, active=active,
                s="" if active == 1 else "s"))
            log.warning("%s", said[-1])
        return said


_CAPACITY_ADVICE = {
    "tts": "speech synthesis was busy {share:.0%} of the last {window:.0f} s with {active} "
           "conversation{s}: replies wait for their voice and may pause mid-answer "
           "(avatar_tts_queue_seconds, avatar_tts_gap_seconds). Lower MAX_CONVERSATIONS, or give "
           "Kokoro more: TTS_WORKERS on idle cores, or a GPU.",
    "llm": "the LLM was busy {share:.0%} of the last {window:.0f} s with {active} "
           "conversation{s}: replies wait for their first words (avatar_llm_queue_seconds). "
           "Lower MAX_CONVERSATIONS, or give the LLM a GPU (LLM_DEVICE) or a smaller model.",
}


async def watch_capacity(interval_s: float = 10.0) -> None:
    """``CapacityWatch.check`` every ``interval_s`` until cancelled (the server runs it)."""
    watch = CapacityWatch()
    while True:
        await asyncio.sleep(interval_s)
        watch.check()


class _EngineCollector(Collector):
    """An engine's counters, read from its ``stats`` at scrape time. ``counters(stats)`` gives
    (name, help, value) rows; a value that is a dict is one series per key, labelled ``label``."""

    def __init__(self, counters, label: str = ""):
        self.engine = None
        self._counters, self._label = counters, label

    def collect(self):
        stats = getattr(self.engine, "stats", None)
        if stats is None:
            return
        for name, doc, value in self._counters(stats):
            if isinstance(value, dict):
                family = CounterMetricFamily(name, doc, labels=[self._label])
                for key, v in value.items():
                    family.add_metric([key], v)
            else:
                family = CounterMetricFamily(name, doc)
                family.add_metric([], value)
            yield family


def _llm_counters(stats):
    """Both LLM engines keep these (EngineStats)."""
    return (
        ("avatar_llm_generated_tokens", "Tokens the LLM generated.", stats.generated_tokens),
        ("avatar_llm_prompt_tokens_read", "Prompt tokens the LLM read.", stats.prefilled_tokens),
        ("avatar_llm_prompt_tokens_cached", "Prompt tokens found already in a "
         "conversation's cache (not read again).", stats.reused_tokens),
        ("avatar_llm_decode_steps", "llama_decode calls (one step of every sequence).",
         stats.steps),
        ("avatar_llm_step_sequences", "Sequences carried by the decode steps, summed "
         "(÷ steps = mean batch size).", stats.batch_sequences),
        ("avatar_llm_decode_seconds", "Time spent in llama_decode.", stats.decode_seconds),
        ("avatar_llm_requests_admitted", "Generations started.", stats.admitted),
        ("avatar_llm_queue_seconds", "Time generations waited for a free sequence "
         "(LLM_PARALLEL=1: for the engine's lock), summed.", stats.queue_seconds),
    )


def _tts_counters(stats):
    """Kokoro's synthesis queue (stack/engines/tts.py SynthesisStats): a wait that grows for
    first chunks says TTS_WORKERS, or the machine, is short for its conversations."""
    return (
        ("avatar_tts_chunks", "Chunks Kokoro synthesized, by kind: a reply's first, or a later "
         "one.", stats.chunks),
        ("avatar_tts_queue_seconds", "Time chunks waited for a free synthesis worker "
         "(TTS_WORKERS), summed, by kind (first chunks go ahead of later ones).",
         stats.wait_seconds),
        ("avatar_tts_synthesis_seconds", "Time Kokoro spent making chunks, summed, by kind "
         "(its rate ÷ TTS_WORKERS: how busy the workers are; near 1, the box has no synthesis "
         "to spare).", stats.synthesis_seconds),
        ("avatar_tts_audio_seconds", "Audio Kokoro made, in seconds, by kind (synthesis ÷ "
         "audio: the real-time factor).", stats.audio_seconds),
    )


_LLM = _EngineCollector(_llm_counters)
REGISTRY.register(_LLM)
_TTS = _EngineCollector(_tts_counters, label="chunk")
REGISTRY.register(_TTS)


def watch(active: Callable[[], int], llm_engine, tts_engine=None) -> None:
    """Read the live conversation count and the LLM and TTS engines' counters from these (the
    latest call wins: one bot per process)."""
    CONVERSATIONS_ACTIVE.set_function(active)
    _LLM.engine = llm_engine
    _TTS.engine = tts_engine


def scrape() -> bytes:
    return generate_latest(REGISTRY)


_SOURCES = (("STTService", "stt"), ("LLMService", "llm"), ("TTSService", "tts"))


def source_of(processor_name: str) -> str:
    """stt, llm, tts or other, from a Pipecat processor's name (``LocalKokoroTTSService#0``)."""
    for marker, source in _SOURCES:
        if marker in processor_name:
            return source
    return "other"
