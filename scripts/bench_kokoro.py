"""Kokoro's int8 graph as downloaded against its convolutions as VNNI matrix products.

Used by ``scripts/bench.py --kokoro``. Both graphs (stack/engines/kokoro_onnx.py,
``convs_as_matmuls``) are loaded on the same file with the same threads; each text is spoken by
both, one right after the other, alternating which goes first, ``rounds`` times, at each thread
count: 1, 2, the profile's Kokoro budget (TTS_THREADS' default) and half the cores. The texts: a
reply's first clause (what a person waits for) and whole sentences, in the profile's voices.
Figures: time per synthesis (median), the ratio of the medians over paired samples with a
bootstrap 95 % interval, the real-time factor, and whether the two made the same audio and
durations, sample for sample.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from bench_livekit import ratio_interval

from stack.config import Settings
from stack.engines.g2p import G2P
from stack.engines.kokoro_onnx import KokoroOnnxBackend, cpu_has_vnni
from stack.engines.tts import KokoroTTS, VoiceBank
from stack.lipsync import FRAME_SAMPLES, SAMPLE_RATE, build_tokens

TEXTS = [
    "Sure, I can help with that.",  # a reply's first clause
    "Hello there!",
    "Well, that depends on the season.",
    "The capital of France is Paris, a city famous for its museums and its cafes.",
    "Kokoro predicts a duration for every phoneme, and we use it to move the lips.",
    "If you leave early tomorrow morning, you should reach the mountains before lunch and "
    "still have the whole afternoon for a walk along the lake.",
]
VOICES = ["af_heart", "am_michael", "bf_emma", "af_bella"]


def run_kokoro_bench(settings: Settings, rounds: int = 6) -> tuple[str, str]:
    if not cpu_has_vnni():
        raise SystemExit("this CPU has no VNNI: the engine keeps the registry graph here, "
                         "there is nothing to compare")
    root, profile = settings.models_dir, settings.profile
    model = root / profile.tts_model
    g2p = G2P(root / profile.spacy_model if profile.spacy_model else None)
    vocab = KokoroTTS.load_vocab(root / profile.tts_config)
    voices = VoiceBank(root / profile.voices_dir)
    names = [v for v in VOICES if v in voices.names()] or [profile.default_voice]
    inputs = []  # (token ids, style)
    for i, text in enumerate(TEXTS):
        ids = build_tokens(g2p(text), vocab).ids
        inputs.append((ids, voices.style(names[i % len(names)], len(ids) - 2)))

    cores = os.cpu_count() or 1
    threads = sorted({n for n in (1, 2, settings.thread_budget["tts"], cores // 2)
                      if 1 <= n <= cores})
    rows = ["| CPU threads | graph | synthesis, median (ms) | real-time factor | as downloaded ÷ "
            "rewritten, median (bootstrap 95 %) | same audio and durations |",
            "|---|---|---|---|---|---|"]
    loads: dict[str, float] = {}
    for n in threads:
        graphs = {}
        for name, vnni in (("as downloaded", False), ("convolutions as VNNI matmuls", True)):
            started = time.perf_counter()
            graphs[name] = KokoroOnnxBackend(model, threads=n, vnni_matmul=vnni)
            loads.setdefault(name, time.perf_counter() - started)
        order = list(graphs)
        times: dict[str, list[float]] = {name: [] for name in graphs}
        audio_s: list[float] = []
        same = True
        for ids, style in inputs:  # warm-up, and the equality check
            out = [graphs[name].infer(ids, style, 1.0) for name in order]
            same &= all(np.array_equal(a, b) for a, b in zip(out[0], out[1], strict=True))
        for r in range(rounds):
            for k, (ids, style) in enumerate(inputs):
                for name in order if (r + k) % 2 == 0 else reversed(order):
                    started = time.perf_counter()
                    audio, durations = graphs[name].infer(ids, style, 1.0)
                    times[name].append(time.perf_counter() - started)
                audio_s.append(sum(durations) * FRAME_SAMPLES / SAMPLE_RATE)
        ratio, lo, hi = ratio_interval(list(zip(*times.values(), strict=True)))
        for name in order:
            rtf = sum(times[name]) / sum(audio_s)
            cells = [f"{statistics.median(times[name]) * 1000:.0f}", f"{rtf:.3f}"]
            cells += ([f"**{ratio:.2f}** ({lo:.2f} … {hi:.2f})", "yes" if same else "**no**"]
                      if name != order[0] else ["", ""])
            rows.append(f"| {n} | {name} | " + " | ".join(cells) + " |")
    notes = (f"onnxruntime's CPU provider; {len(TEXTS)} texts of {min(map(len, TEXTS))} … "
             f"{max(map(len, TEXTS))} characters (a reply's first clause to a long sentence), "
             f"voices {', '.join(names)}; each spoken by both graphs one right after the other, "
             f"alternating which goes first, {rounds} rounds after a warm-up, per thread count. "
             f"Loading took {loads['as downloaded']:.1f} s as downloaded and "
             f"{loads['convolutions as VNNI matmuls']:.1f} s with the rewrite (first load of "
             f"each; the rewrite kept beside the model from an earlier start is loaded as it "
             f"is). Synthesis: one call of the graph (text to audio and durations), "
             f"without G2P.")
    return "\n".join(rows), notes
