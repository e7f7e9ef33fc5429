"""Kokoro's int8 graph as downloaded against its convolutions as VNNI matrix products.

Used by ``scripts/bench.py --kokoro``. Three graphs (stack/engines/kokoro_onnx.py,
``convs_as_matmuls``): as downloaded, rewritten with each convolution's output turned back to
channel-major in blocks (what the engine loads for one thread) and in one Transpose (for more),
loaded on the same file with the same threads; each text is spoken by all three, one right
after the other, alternating the order, ``rounds`` times, at each thread
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
GRAPHS = (  # name, VNNI matmuls, their outputs back to channel-major in blocks
    ("as downloaded", False, None),
    ("convolutions as VNNI matmuls, output in blocks", True, True),
    ("convolutions as VNNI matmuls, output whole", True, False),
)


def _ratio(slow: list[float], fast: list[float]) -> str:
    """median(slow) ÷ median(fast) over paired samples, with its bootstrap 95 % interval."""
    r, lo, hi = ratio_interval(list(zip(slow, fast, strict=True)))
    return f"**{r:.2f}** ({lo:.2f} … {hi:.2f})"


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
            "this, median (bootstrap 95 %) | output whole ÷ in blocks | same audio and "
            "durations as downloaded |",
            "|---|---|---|---|---|---|---|"]
    loads: dict[str, float] = {}
    for n in threads:
        graphs = {}
        for name, vnni, blocks in GRAPHS:
            started = time.perf_counter()
            graphs[name] = KokoroOnnxBackend(model, threads=n, vnni_matmul=vnni,
                                             output_blocks=blocks)
            loads.setdefault(name, time.perf_counter() - started)
        order = list(graphs)
        times: dict[str, list[float]] = {name: [] for name in graphs}
        audio_s: list[float] = []
        same = dict.fromkeys(order, True)
        for ids, style in inputs:  # warm-up, and the equality check
            out = {name: graphs[name].infer(ids, style, 1.0) for name in order}
            for name in order[1:]:
                same[name] &= all(np.array_equal(a, b)
                                  for a, b in zip(out[order[0]], out[name], strict=True))
        for r in range(rounds):
            for k, (ids, style) in enumerate(inputs):
                turn = (r * len(inputs) + k) % len(order)  # each graph first as often
                for name in order[turn:] + order[:turn]:
                    started = time.perf_counter()
                    audio, durations = graphs[name].infer(ids, style, 1.0)
                    times[name].append(time.perf_counter() - started)
                audio_s.append(sum(durations) * FRAME_SAMPLES / SAMPLE_RATE)
        for name in order:
            rtf = sum(times[name]) / sum(audio_s)
            cells = [f"{statistics.median(times[name]) * 1000:.0f}", f"{rtf:.3f}"]
            cells += ([_ratio(times[order[0]], times[name]),
                       _ratio(times[order[2]], times[name]) if name == order[1] else "",
                       "yes" if same[name] else "**no**"] if name != order[0] else ["", "", ""])
            rows.append(f"| {n} | {name} | " + " | ".join(cells) + " |")
    notes = (f"onnxruntime's CPU provider; {len(TEXTS)} texts of {min(map(len, TEXTS))} … "
             f"{max(map(len, TEXTS))} characters (a reply's first clause to a long sentence), "
             f"voices {', '.join(names)}; each spoken by the three graphs one right after the "
             f"other, each first as often, {rounds} rounds after a warm-up, per thread count. "
             f"Loading took {loads[GRAPHS[0][0]]:.1f} s as downloaded and "
             f"{loads[GRAPHS[1][0]]:.1f} s with the rewrite (first load; the rewrite kept beside "
             f"the model from an earlier start is loaded as it is, one form at a time). "
             f"Synthesis: one call of the graph (text to audio and durations), without G2P. "
             f"The engine loads the rewrite with its output in blocks on one thread, whole on "
             f"more.")
    return "\n".join(rows), notes
