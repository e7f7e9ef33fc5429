#!/usr/bin/env python3
"""Measure the engines of a model profile and write the table into docs/benchmarks.md.

    python scripts/bench.py --profile test          # CPU, the small registry models
    python scripts/bench.py --profile gpu --device cuda
    python scripts/bench.py --livekit               # voice to voice, ours vs stock, interleaved
    python scripts/bench.py --web                   # lip-sync offset in headless Chromium
    python scripts/bench.py --web --transport smallwebrtc   # the same without LiveKit
    python scripts/bench.py --long 100              # a 100-turn conversation through the pipeline
    python scripts/bench.py --soak 200              # join/leave cycles: memory, threads, tasks
    python scripts/bench.py --llm-batch 1,2,4       # N conversations on one LLM, both engines
    python scripts/bench.py --concurrent 1,2,4      # N voice conversations through LiveKit
    python scripts/bench.py --concurrent 1,2,4 --transport smallwebrtc   # ... directly, vs LiveKit
    python scripts/bench.py --threads               # the engines' thread settings, all busy at once
    python scripts/bench.py --kokoro                # Kokoro's graph as downloaded vs VNNI matmuls

Figures: model load time, STT real-time factor, LLM time to first token and tokens/s, TTS time
to first audio and real-time factor, and how far Kokoro's word starts sit from Whisper's word
timestamps on the same audio. Each figure is the median of --runs runs after one warm-up.
The section of docs/benchmarks.md between this profile's markers is replaced; the rest is kept.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import soundfile as sf  # noqa: E402
from bench_common import commit, machine, write_section  # noqa: E402

from stack.config import Settings  # noqa: E402
from stack.engines.device import resolve_device  # noqa: E402
from stack.engines.load import load_engines  # noqa: E402
from stack.engines.stt import resample  # noqa: E402

LLM_PROMPT = [{"role": "system", "content": Settings().system_prompt},
              {"role": "user", "content": "Tell me about the city of Paris in three sentences."}]
TTS_TEXT = ("Thanks for asking! The weather looks great today, so it is a good time for a walk "
            "in the park before lunch.")


def median(xs):
    return statistics.median(xs)


def bench(settings: Settings, runs: int, sample: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    engines = load_engines(settings)
    rows.append(("models loaded (STT + LLM + TTS)", f"{time.perf_counter() - t0:.1f} s"))
    rows.append(("device", engines.device))

    audio, sr = sf.read(sample, dtype="float32")
    engines.stt.transcribe(audio)  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        engines.stt.transcribe(audio)
        times.append(time.perf_counter() - t)
    rtf = median(times) / (len(audio) / sr)
    rows.append(("STT real-time factor (10 s of speech)", f"{rtf:.3f}"))

    engines.llm.complete(LLM_PROMPT, max_tokens=8, temperature=0)
    ttfts, rates = [], []
    for run in range(runs):
        # A cold prompt: the batched engine reuses any sequence's cached prefix, so each run's
        # prompt differs from its first words on (reset() alone cleared only the lock engine's).
        engines.llm.model.reset()
        prompt = [{**LLM_PROMPT[0], "content": f"Session {run + 1}. {LLM_PROMPT[0]['content']}"},
                  *LLM_PROMPT[1:]]
        t = time.perf_counter()
        first = None
        n = 0
        for _piece in engines.llm.stream(prompt, max_tokens=128, temperature=0):
            if first is None:
                first = time.perf_counter() - t
            n += 1
        total = time.perf_counter() - t
        ttfts.append(first or total)
        rates.append((n - 1) / (total - first) if first and n > 1 else 0.0)
    rows.append(("LLM time to first token", f"{median(ttfts) * 1000:.0f} ms"))
    rows.append(("LLM generation speed", f"{median(rates):.1f} tokens/s"))

    list(engines.tts.synthesize("Warm up."))
    firsts, rtfs, offsets = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        first = None
        length = 0
        chunks = []
        for chunk in engines.tts.synthesize(TTS_TEXT):
            if first is None:
                first = time.perf_counter() - t
            length += len(chunk.audio)
            chunks.append(chunk)
        total = time.perf_counter() - t
        firsts.append(first)
        rtfs.append(total / (length / 24000))
    # lip-sync sanity: Kokoro's word starts vs Whisper's on the same audio
    chunk = chunks[0]
    heard = engines.stt.transcribe(resample(chunk.audio, 24000))
    norm = lambda s: "".join(c for c in s.lower() if c.isalnum())  # noqa: E731
    tts_words = [(norm(w.word), w.start_ms) for w in chunk.timing.words]
    j = 0
    for w in heard.words:
        for k in range(j, len(tts_words)):
            if tts_words[k][0] == norm(w.word):
                offsets.append(abs(tts_words[k][1] - w.start * 1000))
                j = k + 1
                break
    quick = []
    for _ in range(runs):  # how a reply starts in the bot: short first clause, trimmed lead
        t = time.perf_counter()
        next(engines.tts.synthesize(TTS_TEXT, quick_start=True))
        quick.append(time.perf_counter() - t)
    rows.append(("TTS time to first audio (one sentence)", f"{median(firsts) * 1000:.0f} ms"))
    rows.append(("TTS time to first audio, quick start (as a reply starts)",
                 f"{median(quick) * 1000:.0f} ms"))
    rows.append(("TTS real-time factor", f"{median(rtfs):.3f}"))
    if offsets:
        rows.append(("TTS word starts vs Whisper word timestamps, mean absolute difference",
                     f"{statistics.mean(offsets):.0f} ms over {len(offsets)} words"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", default="test")
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sample", type=Path, default=None, help="a 16 kHz mono WAV of speech")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--livekit", action="store_true",
                    help="voice-to-voice turns through a real LiveKit server, ours vs stock "
                    "Pipecat")
    ap.add_argument("--turns", type=int, default=32,
                    help="turns per pipeline with --livekit (interleaved; the docs' figures: 32)")
    ap.add_argument("--baseline", action="store_true",
                    help="with --livekit: also ours with the streaming rules before 2026-11-26, "
                    "interleaved with the others (before/after in the same run)")
    ap.add_argument("--variant", action="append", default=[],
                    help='with --livekit: also ours with these settings on its own engines, '
                    'e.g. --variant "stt_threads=2 tts_threads=2"; with --concurrent: also the '
                    'batched engine with these settings on its own STT and TTS engines '
                    '(repeatable)')
    ap.add_argument("--quick", action="store_true",
                    help="with --livekit: one round of 8 turns per pipeline; with --web: ours "
                    "only (no stock response time); for development")
    ap.add_argument("--web", action="store_true",
                    help="lip-sync offset in headless Chromium: ours vs text-only and energy")
    ap.add_argument("--talk-seconds", type=int, default=90, help="conversation length with --web")
    ap.add_argument("--transport", choices=["livekit", "smallwebrtc"], default="livekit",
                    help="with --web: how the page reaches the bot (smallwebrtc: directly, "
                    "without LiveKit; its own section in docs/benchmarks.md); with --concurrent "
                    "smallwebrtc: direct connections against LiveKit, both on the batched LLM")
    ap.add_argument("--long", type=int, default=0, metavar="TURNS",
                    help="a conversation of TURNS typed turns through the whole pipeline")
    ap.add_argument("--soak", type=int, default=0, metavar="CYCLES",
                    help="CYCLES join/leave cycles through LiveKit (half leave mid-reply)")
    ap.add_argument("--llm-batch", default="", metavar="SIZES",
                    help="e.g. 1,2,4: that many conversations on one LLM at once, the batched "
                    "engine against one reply at a time (scripts/bench_llm_batch.py)")
    ap.add_argument("--concurrent", default="", metavar="SIZES",
                    help="e.g. 1,2,4: that many voice conversations at once through LiveKit, "
                    "the batched LLM engine against one reply at a time (bench_concurrent.py)")
    ap.add_argument("--questions", type=int, default=3, help="questions per conversation "
                    "with --concurrent")
    ap.add_argument("--pipecat-mic", action="store_true",
                    help="with --concurrent: also the batched engine with Pipecat's own path for "
                    "the person's audio (48 kHz, 10 ms frames, to the pipeline's end)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per contender: with --concurrent (default 1) and --kokoro "
                    "(default 6)")
    ap.add_argument("--stt", action="store_true",
                    help="Whisper on its whole 30 s window against the short window: word error "
                    "rate and time (scripts/bench_stt.py)")
    ap.add_argument("--threads", action="store_true",
                    help="the three engines busy at once under several thread settings")
    ap.add_argument("--kokoro", action="store_true",
                    help="Kokoro's int8 graph as downloaded against its convolutions as VNNI "
                    "matrix products, interleaved")
    args = ap.parse_args()
    kw = {"model_profile": args.profile, "device": args.device}
    if args.models_dir:
        kw["models_dir"] = args.models_dir
    settings = Settings(**kw, _env_file=None)
    stamp = (f"Machine: {machine()}. Profile: `{args.profile}`. Commit: `{commit()}`. "
             f"Date: {datetime.now(timezone.utc):%Y-%m-%d}.")
    if args.stt:
        from bench_stt import run_stt_bench

        table, notes = run_stt_bench(settings)
        print(write_section(args.out, f"stt-window:{args.profile}",
                            f"Whisper's window, `{args.profile}`", f"{stamp} {notes}", table))
        return 0
    if args.threads:
        from bench_threads import run_threads_bench

        table, notes = run_threads_bench(settings)
        print(write_section(args.out, f"threads:{args.profile}",
                            f"Engines sharing the CPU, `{args.profile}`", f"{stamp} {notes}",
                            table))
        return 0
    if args.kokoro:
        from bench_kokoro import run_kokoro_bench

        table, notes = run_kokoro_bench(settings, rounds=args.rounds or 6)
        print(write_section(args.out, f"kokoro-graph:{args.profile}",
                            f"Kokoro's convolutions on the CPU, `{args.profile}`",
                            f"{stamp} {notes}", table))
        return 0
    if args.concurrent:
        from bench_concurrent import run_concurrent_bench

        table, notes = run_concurrent_bench(settings, [int(n) for n in args.concurrent.split(",")],
                                            args.questions, args.rounds or 1, args.transport,
                                            args.variant, pipecat_mic=args.pipecat_mic)
        key, title = f"concurrent:{args.profile}", "Conversations at once through LiveKit"
        if args.transport != "livekit":
            key, title = f"concurrent-{args.transport}:{args.profile}", \
                "Conversations at once: SmallWebRTC against LiveKit"
        elif args.pipecat_mic:
            key, title = f"mic-path:{args.profile}", ("The person's audio: Pipecat's path "
                                                       "against ours, through LiveKit")
        print(write_section(args.out, key, f"{title}, `{args.profile}`", f"{stamp} {notes}",
                            table))
        return 0
    if args.llm_batch:
        from bench_llm_batch import run_llm_batch_bench

        table, notes = run_llm_batch_bench(
            settings.models_dir / settings.profile.llm_model, resolve_device(args.device),
            [int(n) for n in args.llm_batch.split(",")], threads=settings.llm_threads)
        print(write_section(args.out, f"llm-batch:{args.profile}",
                            f"Many conversations on one LLM, `{args.profile}`",
                            f"{stamp} {notes}", table))
        return 0
    if args.livekit or args.web or args.long or args.soak:
        if args.long:
            from bench_long import run_long_bench

            key, title = "long", "A long conversation"
            table, notes = run_long_bench(settings, args.long)
        elif args.soak:
            from bench_soak import run_soak_bench

            key, title = "soak", "Many sessions, one process"
            table, notes = run_soak_bench(settings, args.soak)
        elif args.livekit:
            from bench_livekit import run_livekit_bench

            key, title = "livekit", "Voice to voice through LiveKit"
            table, notes = run_livekit_bench(
                settings, 8 if args.quick else args.turns, baseline=args.baseline,
                variants=args.variant,
                dump_to=ROOT / "test-artifacts" / "bench-livekit.json")
        else:
            from bench_web import run_web_bench

            key, title = "web", "Lip-sync in the browser"
            if args.transport != "livekit":
                key, title = f"web-{args.transport}", "Lip-sync in the browser over SmallWebRTC"
            table, notes = run_web_bench(
                settings, args.talk_seconds, stock=not args.quick,
                dump_to=ROOT / "test-artifacts" / f"bench-{key}.json", transport=args.transport)
            notes = f"\n\n{notes}"
        print(write_section(args.out, f"{key}:{args.profile}", f"{title}, `{args.profile}` profile",
                            f"{stamp} {notes}", table))
        return 0
    sample = args.sample or settings.models_dir / "test" / "beckett.wav"
    rows = bench(settings, args.runs, sample)
    table = "\n".join(["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    print(write_section(args.out, f"engines:{args.profile}", f"Engines, `{args.profile}` profile",
                        f"{stamp} Median of {args.runs} runs.", table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
