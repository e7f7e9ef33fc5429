"""Whisper on the whole 30 s window against the short window (the utterance and ``TAIL_S``).

Used by ``scripts/bench.py --stt``. The utterances: ``SENTENCES`` spoken by each voice of the
profile's Kokoro (resampled to 16 kHz, 0.3 s of silence before and 0.2 s after, as the VAD cuts
a segment, and a faint noise floor), three of them in a row as longer utterances, and the
profile's human sample (beckett.wav). Each utterance is transcribed both ways, one right after
the other, alternating which goes first. Figures: word error rate against the text spoken, time
per utterance (median, p95), how many transcripts differ, and how often the short window's
transcript repeated itself and was made again on the whole window.
"""

from __future__ import annotations

import re
import statistics
import time

import numpy as np
import soundfile as sf

from stack.config import Settings
from stack.engines import stt as stt_module
from stack.engines.load import load_engines
from stack.engines.stt import SAMPLE_RATE, resample
from stack.manifest import TEST

SENTENCES = [
    "What is the capital of France?", "Can you tell me a fun fact about cats?",
    "How are you doing today?", "What should I cook for dinner tonight?",
    "Why is the sky blue?", "What is your favourite season of the year?",
    "Can you recommend a good book to read?", "How far away is the moon?",
    "Please set a timer for twenty five minutes.", "My name is Alice and I live in Boston.",
    "Tell me a joke about penguins.", "What's the weather usually like in Seattle in November?",
    "I need help writing an email to my manager about taking Friday off.",
    "How many legs does a spider have?",
    "Could you explain how photosynthesis works in simple terms?", "Stop.", "Yes, please.",
    "No, that's not what I meant.", "Thanks a lot, that was really helpful!",
    "Remind me what we talked about earlier.", "Who wrote Pride and Prejudice?",
    "Translate good morning into Spanish.",
    "I'm feeling a bit tired today, any tips to stay focused?", "Let's play a word game.",
    "Describe the color orange to someone who has never seen it.",
    "Is it going to rain tomorrow?", "What year did the first person walk on the moon?",
    "Give me three ideas for a birthday present for my sister.",
    "Hmm, let me think about that for a second.", "Okay, go on.",
]


def _words(text: str) -> list[str]:
    text = text.lower().replace("favorite", "favourite")
    return re.sub(r"[^a-z0-9' ]", " ", text).split()


def _errors(ref: list[str], hyp: list[str]) -> int:
    """Word-level edit distance."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def utterances(settings: Settings, engines) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    lead, tail = np.zeros(int(0.3 * SAMPLE_RATE), np.float32), np.zeros(int(0.2 * SAMPLE_RATE),
                                                                         np.float32)
    out = []
    for voice in engines.tts.voices.names():
        for text in SENTENCES:
            audio = resample(np.concatenate(
                [c.audio for c in engines.tts.synthesize(text, voice=voice)]), 24000)
            audio = np.concatenate([lead, audio, tail])
            out.append((text, audio + rng.normal(0, 0.003, len(audio)).astype(np.float32)))
    singles = list(out)
    for i in range(0, len(singles) - 2, 3):
        three = singles[i:i + 3]
        out.append((" ".join(t for t, _ in three), np.concatenate([a for _, a in three])))
    sample = settings.models_dir / TEST.sample_wav
    if sample.is_file():
        audio, rate = sf.read(sample, dtype="float32")
        out.append((TEST.sample_text, resample(audio, rate) if rate != SAMPLE_RATE else audio))
    return out


def run_stt_bench(settings: Settings) -> tuple[str, str]:
    engines = load_engines(settings)
    stt = engines.stt
    clips = utterances(settings, engines)
    retries_before = stt.whole_window_retries
    ways = {"whole 30 s window": False, "short window": True}
    times = {k: [] for k in ways}
    errors = {k: 0 for k in ways}
    texts = {k: [] for k in ways}
    for i, (text, audio) in enumerate(clips):
        order = list(ways) if i % 2 == 0 else list(reversed(ways))
        for way in order:
            t = time.perf_counter()
            heard = stt.transcribe(audio, word_timestamps=False, short_window=ways[way])
            times[way].append(time.perf_counter() - t)
            errors[way] += _errors(_words(text), _words(heard.text))
            texts[way].append(heard.text)
    total = sum(len(_words(t)) for t, _ in clips)
    differ = sum(a != b for a, b in zip(*texts.values(), strict=True))
    rows = ["| Whisper window | word error rate | time per utterance p50 / p95 (ms) |",
            "|---|---|---|"]
    for way in ways:
        ts = sorted(times[way])
        p50, p95 = statistics.median(ts), ts[int(0.95 * (len(ts) - 1))]
        rows.append(f"| {way} | {100 * errors[way] / total:.1f} % | "
                    f"{1000 * p50:.0f} / {1000 * p95:.0f} |")
    lengths = [len(a) / SAMPLE_RATE for _, a in clips]
    notes = (f"{len(clips)} utterances of {min(lengths):.1f} … {max(lengths):.1f} s ({total} "
             f"words): {len(SENTENCES)} sentences in each of the profile's "
             f"{len(engines.tts.voices.names())} Kokoro voices, three in a row as longer ones, "
             f"and beckett.wav; each transcribed both ways back to back, alternating which goes "
             f"first; {stt.compute_type} on {stt.device}, "
             f"{settings.thread_budget['stt']} thread(s). Short window: the utterance and "
             f"{stt_module.TAIL_S} s after it, at least {stt_module.MIN_WINDOW_S} s "
             f"(stack/engines/stt.py). Transcripts that differ: {differ}/{len(clips)}; "
             f"short-window transcripts that repeated themselves and were made again on the "
             f"whole window: {stt.whole_window_retries - retries_before}.")
    return "\n".join(rows), notes
