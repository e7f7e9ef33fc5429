"""Several conversations at once: the batched LLM engine against one reply at a time through a
real LiveKit server, or (``--transport smallwebrtc``) direct connections against LiveKit, in the
same run. Used by ``scripts/bench.py --concurrent 1,2,4``.

For each N, N clients each hold a conversation with its own bot session of the product's
pipeline, and each speaks ``--questions`` questions, one after the other reply, the clients
starting 1.5 s apart (people do not all speak at the same instant). The clients: Python LiveKit
participants (tests/lk_client.py) in N rooms, or aiortc peers (tests/peer_client.py) offering to
the bot's POST /webrtc/offer as the page does. Everything shares one process and its event loop:
the bot, its API and the clients (an aiortc client's audio work runs in Python; a LiveKit
client's mostly in LiveKit's native library), and the machine with the LiveKit server.

Contenders: ``livekit``: one LLM reply at a time vs the batched engine, both through LiveKit;
``smallwebrtc``: the batched engine through LiveKit vs over SmallWebRTC. Both share the same STT
and TTS engines. ``--variant "key=value ..."`` adds the batched engine through LiveKit with those
settings on its own STT and TTS engines (e.g. ``tts_workers=1``: before/after in the same run).
``--pipecat-mic`` adds the batched engine with Pipecat's own path for the person's audio, as it
was before ``stack/transport.py``'s ``MicLiveKitClient`` and ``stack/pipeline.py``'s
``MicAudioEnd``: LiveKit's 48 kHz in 10 ms frames, resampled on the event loop (soxr, in bursts
of 69 ms), and passed on to the pipeline's end. For each N the contenders run alternately (A, B,
then B, A with ``--rounds 2``).

Per N and contender: voice to voice at the clients (the last sample of a question leaving its
microphone track → the first audible sample of the answer arriving), p50 and p95; turns
answered within 60 s; the LLM's aggregate tokens/s over the run (generated tokens ÷ the run's
wall time: it counts idle time too, so it compares engines at the same load, not peak speed)
and its mean wait for a free sequence (batched) or for the lock (one at a time); how often the
event loop ran a 20 ms timer more than 50 ms late (stack/metrics.py's EVENT_LOOP_LAG; over
SmallWebRTC that loop paces every conversation's voice); the CPU the event loop's thread and the
whole process (bot, clients, LiveKit's native threads; not the LiveKit server) used, in cores;
for N > 1, issue 14's measure: the p95 over the same contender's p95 at N = 1 (when 1 is among
the sizes), with a bootstrap interval.
Through LiveKit, also the waterfall of each turn (bench_livekit.py's moments: end of turn,
transcript, LLM first token, TTS first audio, ...), so that the step that grows with N shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from bench_livekit import (
    GAP_S,
    KEY,
    MAX_ANSWER_TOKENS,
    QUESTIONS,
    SECRET,
    Participant,
    _pct,
    _trimmed,
    answer_heard,
    waterfall_lines,
    with_variant,
)
from peer_client import PeerClient, offers_to
from pipecat.pipeline.pipeline import Pipeline
from pipecat.transports.livekit.transport import LiveKitTransportClient

from stack.bot import BotManager
from stack.config import Settings
from stack.engines.llm import LlamaLLM
from stack.engines.llm_batch import BatchedLlamaLLM
from stack.engines.load import Engines, describe_devices, load_engines, load_kokoro, load_stt
from stack.engines.stt import resample
from stack.livekit_server import LiveKitServer, find_binary
from stack.metrics import EVENT_LOOP_LAG, watch_event_loop
from stack.pipeline import MicAudioEnd, build_pipeline
from stack.server import create_app
from stack.transport import MicLiveKitClient

STAGGER_S = 1.5
LATE_S = 0.05  # a bucket of EVENT_LOOP_LAG


Moments = dict[str, float]  # a turn's waterfall, s since the end of speech; "heard": v2v


def p95_ratio(crowded: list[float], alone: list[float], n: int = 4000,
              seed: int = 0) -> tuple[float, float, float]:
    """p95(crowded)/p95(alone), and its bootstrap 95 % interval (each resampled on its own: the
    turns of N conversations and of one are different turns). A p95 of a few dozen turns moves
    a lot from run to run; the interval says how much."""
    a, b = np.asarray(crowded), np.asarray(alone)
    rng = np.random.default_rng(seed)
    ratios = (np.percentile(rng.choice(a, (n, len(a))), 95, axis=1)
              / np.percentile(rng.choice(b, (n, len(b))), 95, axis=1))
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(np.percentile(a, 95) / np.percentile(b, 95)), float(lo), float(hi)


async def _livekit_person(manager: BotManager, url: str, room: str,
                          questions: list[np.ndarray]) -> list[Moments]:
    p = Participant("ours", manager)
    await p.start(url, room)
    try:
        turns = [await p.ask(audio, (0, k)) for k, audio in enumerate(questions)]
        return [dict(t.moments, **({"gap": t.gap} if t.gap is not None else {}))
                for t in turns]
    finally:
        await p.stop()


async def _peer_person(http: httpx.AsyncClient, questions: list[np.ndarray]) -> list[Moments]:
    client = PeerClient()
    await client.join(offers_to(http))
    await client.silence(1.0)
    out: list[Moments] = []
    try:
        for audio in questions:
            await client.speak(audio)  # returns once its last sample has gone out
            t_end = time.monotonic()
            await client.silence(0.2)
            first = await answer_heard(client, t_end)
            out.append({} if first is None else {"heard": first - t_end})
        return out
    finally:
        await client.leave()


async def _one_run(manager: BotManager, transport: str, url: str, n: int,
                   questions: list[list[np.ndarray]], tag: str) -> list[Moments]:
    """Each person's turns, question by question (no "heard": not answered within 60 s)."""
    app = create_app(manager.settings, models_ready=lambda: True, on_offer=manager.answer)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot",
                             headers={"Authorization": f"Bearer {manager.settings.access_key}"})

    async def person(i: int) -> list[Moments]:
        await asyncio.sleep(i * STAGGER_S)
        if transport == "smallwebrtc":
            return await _peer_person(http, questions[i])
        return await _livekit_person(manager, url, f"bench-{tag}-{n}-{i}", questions[i])

    watcher = asyncio.ensure_future(watch_event_loop())
    try:
        results = await asyncio.gather(*(person(i) for i in range(n)))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await manager.stop_all()
        await http.aclose()
    return [turn for per in results for turn in per]


@contextlib.contextmanager
def pipecats_mic_path():
    """Meanwhile LiveKit sessions open the person's audio stream as Pipecat does (48 kHz, 10 ms
    frames, resampled on the event loop). The pipeline's side is ``without_mic_audio_end``."""
    ours = MicLiveKitClient._process_audio_stream
    MicLiveKitClient._process_audio_stream = LiveKitTransportClient._process_audio_stream
    try:
        yield
    finally:
        MicLiveKitClient._process_audio_stream = ours


def without_mic_audio_end(engines: Engines, settings: Settings):
    """A pipeline builder: the product's pipeline less ``MicAudioEnd``, so that the person's
    audio goes on to the pipeline's end, as in Pipecat."""
    def build(**kw):
        conversation = build_pipeline(engines, settings, **kw)
        inner = conversation.pipeline.processors[1:-1]  # less the pipeline's own source and sink
        return dataclasses.replace(conversation, pipeline=Pipeline(
            [p for p in inner if not isinstance(p, MicAudioEnd)]))
    return build


def _loop_counts() -> tuple[float, float]:
    """EVENT_LOOP_LAG so far: (timers observed, timers more than LATE_S late)."""
    buckets = {s.labels["le"]: s.value for s in EVENT_LOOP_LAG.collect()[0].samples
               if s.name.endswith("_bucket")}
    total = buckets["+Inf"]
    return total, total - buckets[str(LATE_S)]


def _counters(engines: Engines) -> Counter:
    """What a run is measured by, as running totals (a run's figures: after − before)."""
    llm, tts = engines.llm.stats, engines.tts.stats
    ticks, late = _loop_counts()
    return Counter(tokens=llm.generated_tokens, admitted=llm.admitted, llm_wait=llm.queue_seconds,
                   ticks=ticks, late=late, first_chunks=tts.chunks["first"],
                   first_chunk_wait=tts.wait_seconds["first"],
                   tts_busy=sum(tts.synthesis_seconds.values()),
                   tts_audio=sum(tts.audio_seconds.values()),
                   # asyncio.run runs the event loop on this (the main) thread
                   loop_cpu=time.thread_time(), cpu=time.process_time())


def run_concurrent_bench(settings: Settings, sizes: list[int], questions_each: int = 3,
                         rounds: int = 1, transport: str = "livekit",
                         variants: list[str] = (), pipecat_mic: bool = False) -> tuple[str, str]:
    binary = find_binary()
    if binary is None:
        raise SystemExit("livekit-server not found: run scripts/test.sh once (it builds it)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    livekit = LiveKitServer(binary, tmp, KEY, SECRET)
    s = settings.model_copy(update=dict(
        livekit_url=livekit.url, livekit_api_key=KEY, livekit_api_secret=SECRET,
        access_key="bench access key", rate_limit_per_minute=10_000,
        session_empty_seconds=30, max_conversations=max(sizes),
        # as in the LiveKit benchmark: the tiny test model sometimes repeats a sentence up to its
        # limit (256 tokens, a minute of speech), and each person asks once the reply is over
        llm_max_tokens=MAX_ANSWER_TOKENS))
    path = s.models_dir / s.profile.llm_model
    rows = []
    waterfalls: list[tuple[int, dict[str, list[Moments]]]] = []
    try:
        shared = load_engines(s.model_copy(update=dict(llm_parallel=1)))
        assert isinstance(shared.llm, LlamaLLM)
        batched = BatchedLlamaLLM(path, device=shared.llm.device, n_ctx=s.llm_context_tokens,
                                  threads=s.thread_budget["llm"], parallel=max(sizes))

        def engines(llm) -> Engines:
            return Engines(stt=shared.stt, llm=llm, tts=shared.tts, device=shared.device)

        # name -> (engines, transport)
        contenders = ({"one at a time": (engines(shared.llm), "livekit"),
                       "batched": (engines(batched), "livekit")} if transport == "livekit" else
                      {"LiveKit": (engines(batched), "livekit"),
                       "SmallWebRTC": (engines(batched), "smallwebrtc")})
        for variant in variants:  # its own STT and TTS; the batched LLM serves it
            vs = with_variant(s, variant)
            stt, tts = load_stt(vs), load_kokoro(vs)
            own = Engines(stt=stt, llm=batched, tts=tts, device=describe_devices(stt, batched, tts))
            contenders[f"batched, {variant}"] = (own, "livekit")
        stock_mic = "batched, Pipecat's mic path"
        if pipecat_mic:  # the same engines as "batched": only the audio's path differs
            contenders[stock_mic] = (engines(batched), "livekit")
        voices = ["am_michael", "bf_emma", "af_bella", "af_heart"]
        # (question, voice) -> 16 kHz speech; people who share both share the audio (Kokoro is
        # deterministic): at 32 conversations, 16 syntheses for 2 questions each instead of 64
        audio: dict[tuple[str, str], np.ndarray] = {}

        def asked(person: int, k: int) -> np.ndarray:
            key = (QUESTIONS[(person * 3 + k) % len(QUESTIONS)], voices[person % len(voices)])
            if key not in audio:
                text, voice = key
                speech = np.concatenate([c.audio for c in shared.tts.synthesize(text, voice=voice)])
                audio[key] = _trimmed(resample(speech, 24000, 16000))  # its end: speech's
            return audio[key]

        for n in sizes:
            questions = [[asked(i, k) for k in range(questions_each)] for i in range(n)]
            got: dict[str, list[Moments]] = {name: [] for name in contenders}
            spent: dict[str, Counter] = {name: Counter() for name in contenders}
            for r in range(rounds):
                order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
                for name in order:
                    tag = f"c{list(contenders).index(name)}r{r}"  # each run its own rooms
                    mine, via = contenders[name]
                    ms = s.model_copy(update=dict(transport=via))
                    manager = BotManager(ms, mine, without_mic_audio_end(mine, ms)
                                         if name == stock_mic else None)
                    before, started = _counters(mine), time.monotonic()
                    with pipecats_mic_path() if name == stock_mic else contextlib.nullcontext():
                        turns = asyncio.run(_one_run(manager, via, livekit.url, n, questions,
                                                     tag))
                    wall = time.monotonic() - started
                    after = _counters(mine)
                    got[name] += turns
                    spent[name].update({k: after[k] - before[k] for k in after}, wall=wall)
                    answered = [m["heard"] for m in turns if "heard" in m]
                    print(f"N={n} round {r + 1} {name}: {len(answered)}/{len(turns)} "
                          f"answered, p50 {_pct(answered, .5) if answered else float('nan'):.2f} s",
                          flush=True)
            waterfalls.append((n, {name: got[name] for name in contenders
                                   if contenders[name][1] == "livekit"}))
            for name in contenders:
                answered = [m["heard"] for m in got[name] if "heard" in m]
                x = spent[name]  # summed over its rounds
                tokens = f"{x['tokens'] / x['wall']:.1f}"
                wait = f"{x['llm_wait'] / max(1, x['admitted']) * 1000:.0f} ms"
                lag = f"{x['late'] / max(1, x['ticks']):.1%}"
                first = f"{x['first_chunk_wait'] / max(1, x['first_chunks']) * 1000:.0f} ms"
                cores = f"{x['loop_cpu'] / x['wall']:.2f} / {x['cpu'] / x['wall']:.2f}"
                gaps = [m["gap"] for m in got[name] if "gap" in m]
                gapped = f"{sum(g > GAP_S for g in gaps)}/{len(gaps)}" if gaps else "n/a"
                kokoro = (f"{x['tts_busy'] / (x['wall'] * contenders[name][0].tts.workers):.0%}"
                          f" / {x['tts_busy'] / max(x['tts_audio'], 1e-9):.2f}")
                rows.append((n, name, answered, len(got[name]), tokens, wait, first, kokoro,
                             gapped, lag, cores))
        batched.close()
    finally:
        livekit.stop()

    def fmt(xs: list[float], q: float) -> str:
        return f"{_pct(xs, q):.2f} s" if xs else "n/a"

    lines = [f"| conversations | {'LLM engine' if transport == 'livekit' else 'transport'} | "
             "voice to voice p50 | p95 | answered | LLM tokens/s over the run | "
             "LLM wait for a sequence or the lock (mean) | Kokoro wait, a reply's first chunk "
             "(mean) | Kokoro busy / its real-time factor | answers with a gap in their voice "
             "| event loop: 20 ms timers > 50 ms late | CPU, cores: event loop / process | "
             "p95 ÷ p95 of one conversation (bootstrap 95 % interval) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    alone = {name: answered for n, name, answered, *_ in rows if n == 1}
    for n, name, answered, total, tokens, wait, first, kokoro, gaps, lag, cores in rows:
        ratio = "n/a"
        if n > 1 and answered and alone.get(name):
            r, lo, hi = p95_ratio(answered, alone[name])
            ratio = f"{r:.2f} ({lo:.2f} … {hi:.2f})"
        lines.append(f"| {n} | {name} | {fmt(answered, .5)} | {fmt(answered, .95)} | "
                     f"{len(answered)}/{total} | {tokens} | {wait} | {first} | {kokoro} | "
                     f"{gaps} | {lag} | {cores} | {ratio} |")
    for n, moments in waterfalls:
        if moments:
            lines += ["", f"Waterfall at {n} conversation{'s' if n > 1 else ''} (through "
                      "LiveKit):", ""] + waterfall_lines(moments)
    who = ("One LLM reply at a time and the batched engine, both through LiveKit"
           if transport == "livekit" else
           "The batched LLM engine through LiveKit and over SmallWebRTC (aiortc clients offering "
           "to POST /webrtc/offer, in the bot's process)")
    budget = settings.thread_budget
    notes = (f"Engines on {shared.device}. CPU threads: Whisper {budget['stt']} "
             f"({settings.whisper_workers} at a time), llama.cpp {budget['llm']}, "
             f"Kokoro {budget['tts']} ({settings.kokoro_workers} at a time). "
             f"{who}; {questions_each} questions per conversation, conversations starting "
             f"{STAGGER_S:g} s apart, {rounds} round(s) per contender and N, alternating; the "
             "same STT and TTS engines serve both"
             + "".join(f"; batched, {v}: those settings on its own STT and TTS engines"
                       for v in variants)
             + ("; batched, Pipecat's mic path: the person's audio from LiveKit at 48 kHz in "
                "10 ms frames, resampled on the event loop (soxr's VHQ stream, which hands on "
                "69 ms at a time), and on to the pipeline's end (the "
                "product: 16 kHz from LiveKit in 32 ms frames, ending at the user aggregator)"
                if pipecat_mic else "")
             + ". Voice to voice at the clients: the last sample of a question leaving its "
             "microphone track → the first audible sample of the answer. An answer not heard "
             f"within 60 s counts as not answered. Answers of at most {MAX_ANSWER_TOKENS} "
             "tokens. Kokoro wait: how long a reply's first chunk "
             "waited for a free synthesis worker (TTS_WORKERS). Kokoro busy: its synthesis "
             "time over the run's, per worker (100 %: never idle); its real-time factor: that "
             "time over the audio it made. A gap: the answer's voice "
             f"stopped for more than {GAP_S * 1000:.0f} ms mid-answer, waiting for its next "
             "chunk (the TTS service's own count). Waterfall: as in the LiveKit "
             "benchmark, each moment since the end of speech and its step from the moment "
             "before.")
    return "\n".join(lines), notes
