"""The capacity warning in the log (stack/metrics.py ``CapacityWatch``): when Kokoro's workers
or the LLM were busy most of the last minute while people talked, the operator reads it, once
per ten minutes, with what to change."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from stack import metrics
from stack.engines.llm import EngineStats
from stack.engines.tts import SynthesisStats


@dataclass
class FakeTTS:
    workers: int = 1
    stats: SynthesisStats = field(default_factory=SynthesisStats)


@dataclass
class FakeLLM:
    stats: EngineStats = field(default_factory=EngineStats)


@pytest.fixture
def box():
    """Engines whose busy time the test sets, a clock it moves, and a conversation count."""
    tts, llm, now, people = FakeTTS(workers=2), FakeLLM(), [0.0], [2]
    metrics.watch(lambda: people[0], llm, tts)
    yield tts, llm, now, people, metrics.CapacityWatch(clock=lambda: now[0])
    metrics.watch(lambda: 0, None, None)


def run(watch, tts, llm, now, seconds: float, tts_share: float, llm_share: float = 0.1,
        step: float = 10.0) -> list[str]:
    """``seconds`` pass, checked every ``step``, with the engines busy these shares."""
    said = []
    for _ in range(int(seconds / step)):
        now[0] += step
        tts.stats.synthesis_seconds["later"] += step * tts_share * tts.workers
        llm.stats.decode_seconds += step * llm_share
        said += watch.check()
    return said


def test_a_busy_synthesis_is_said_once_with_what_to_change(box, caplog):
    tts, llm, now, people, watch = box
    with caplog.at_level("WARNING", logger="stack.metrics"):
        assert run(watch, tts, llm, now, 120, tts_share=0.5) == []  # half busy: fine
        said = run(watch, tts, llm, now, 120, tts_share=0.97)
    assert len(said) == 1 and said[0] in caplog.text
    assert said[0].startswith("speech synthesis was busy 9")  # 9x % of the last minute
    assert "with 2 conversations" in said[0] and "MAX_CONVERSATIONS" in said[0]
    assert "TTS_WORKERS" in said[0]
    # still busy: not said again for ten minutes, then again
    assert run(watch, tts, llm, now, 480, tts_share=0.97) == []
    assert len(run(watch, tts, llm, now, 120, tts_share=0.97)) == 1


def test_the_llm_is_watched_too(box):
    tts, llm, now, _, watch = box
    said = run(watch, tts, llm, now, 90, tts_share=0.2, llm_share=0.95)
    assert len(said) == 1 and said[0].startswith("the LLM was busy") and "LLM_DEVICE" in said[0]


def test_nothing_is_said_without_conversations_or_before_a_whole_minute(box):
    tts, llm, now, people, watch = box
    assert run(watch, tts, llm, now, 50, tts_share=1.0) == []  # less than a minute seen
    people[0] = 0  # a benchmark's engines busy with no one talking
    assert run(watch, tts, llm, now, 120, tts_share=1.0) == []


def test_a_minute_busy_after_an_idle_hour_is_said(box):
    """The share is over the last minute, not since the start."""
    tts, llm, now, _, watch = box
    assert run(watch, tts, llm, now, 3600, tts_share=0.0) == []
    assert len(run(watch, tts, llm, now, 70, tts_share=0.99)) == 1
