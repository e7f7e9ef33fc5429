"""Several conversations at once through a real LiveKit server: the batched LLM engine against
one reply at a time, in the same run. Used by ``scripts/bench.py --concurrent 1,2,4``.

For each N, N Python LiveKit clients (tests/lk_client.py) join N rooms, each with its own bot
session of the product's pipeline, and each speaks ``--questions`` questions, one after the
other reply, the clients starting 1.5 s apart (people do not all speak at the same instant).
Both engines serve the same STT and TTS engines (only the LLM differs), and for each N the two
run alternately (one at a time, batched, then batched, one at a time with ``--rounds 2``).

Per N and engine: voice to voice at the clients (the last sample of a question leaving its
microphone track → the first audible sample of the answer arriving), p50 and p95; turns
answered within 60 s; the LLM's aggregate tokens/s over the run (generated tokens ÷ the run's
wall time: it counts idle time too, so it compares engines at the same load, not peak speed)
and its mean wait for a free sequence (batched) or for the lock (one at a time).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_livekit import KEY, QUESTIONS, SECRET, Participant, _pct, _trimmed

from stack.bot import BotManager
from stack.config import Settings
from stack.engines.llm import LlamaLLM
from stack.engines.llm_batch import BatchedLlamaLLM
from stack.engines.load import Engines, load_engines
from stack.engines.stt import resample
from stack.livekit_server import LiveKitServer, find_binary

STAGGER_S = 1.5


async def _one_run(manager: BotManager, url: str, n: int, questions: list[list[np.ndarray]],
                   tag: str) -> list[float | None]:
    """Each person's voice-to-voice per question (None: not answered within 60 s)."""
    async def person(i: int) -> list[float | None]:
        await asyncio.sleep(i * STAGGER_S)
        p = Participant("ours", manager)
        await p.start(url, f"bench-{tag}-{n}-{i}")
        try:
            return [(await p.ask(audio, (i, k))).v2v for k, audio in enumerate(questions[i])]
        finally:
            await p.stop()

    results = await asyncio.gather(*(person(i) for i in range(n)))
    return [latency for per in results for latency in per]


def run_concurrent_bench(settings: Settings, sizes: list[int], questions_each: int = 3,
                         rounds: int = 1) -> tuple[str, str]:
    binary = find_binary()
    if binary is None:
        raise SystemExit("livekit-server not found: run scripts/test.sh once (it builds it)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    livekit = LiveKitServer(binary, tmp, KEY, SECRET)
    s = settings.model_copy(update=dict(
        livekit_url=livekit.url, livekit_api_key=KEY, livekit_api_secret=SECRET,
        session_empty_seconds=30, max_conversations=max(sizes)))
    path = s.models_dir / s.profile.llm_model
    rows = []
    try:
        shared = load_engines(s.model_copy(update=dict(llm_parallel=1)))
        llms = {"one at a time": shared.llm,
                "batched": BatchedLlamaLLM(path, device=shared.device, n_ctx=s.llm_context_tokens,
                                           threads=s.thread_budget["llm"], parallel=max(sizes))}
        assert isinstance(shared.llm, LlamaLLM)
        voices = ["am_michael", "bf_emma", "af_bella", "af_heart"]
        audio = {}  # (person, question) -> 16 kHz speech, a voice per person

        def asked(person: int, k: int) -> np.ndarray:
            key = (person, k)
            if key not in audio:
                text = QUESTIONS[(person * 3 + k) % len(QUESTIONS)]
                speech = np.concatenate([c.audio for c in shared.tts.synthesize(
                    text, voice=voices[person % len(voices)])])
                audio[key] = _trimmed(resample(speech, 24000, 16000))  # its end: speech's
            return audio[key]

        for n in sizes:
            questions = [[asked(i, k) for k in range(questions_each)] for i in range(n)]
            got: dict[str, list] = {name: [] for name in llms}
            spent: dict[str, list] = {name: [] for name in llms}
            for r in range(rounds):
                order = list(llms) if r % 2 == 0 else list(reversed(llms))
                for name in order:
                    llm = llms[name]
                    engines = Engines(stt=shared.stt, llm=llm, tts=shared.tts,
                                      device=shared.device)
                    manager = BotManager(s, engines)
                    stats = llm.stats
                    before = (stats.generated_tokens, stats.admitted, stats.queue_seconds)
                    started = time.monotonic()
                    latencies = asyncio.run(_one_run(manager, livekit.url, n, questions,
                                                     f"{name[:3]}{r}"))
                    wall = time.monotonic() - started
                    got[name] += latencies
                    spent[name].append((wall, stats.generated_tokens - before[0],
                                        stats.admitted - before[1],
                                        stats.queue_seconds - before[2]))
                    answered = [x for x in latencies if x is not None]
                    print(f"N={n} round {r + 1} {name}: {len(answered)}/{len(latencies)} "
                          f"answered, p50 {_pct(answered, .5) if answered else float('nan'):.2f} s",
                          flush=True)
            for name in llms:
                answered = [x for x in got[name] if x is not None]
                runs = spent[name]
                tokens = f"{sum(x[1] for x in runs) / sum(x[0] for x in runs):.1f}"
                wait = f"{sum(x[3] for x in runs) / max(1, sum(x[2] for x in runs)) * 1000:.0f} ms"
                rows.append((n, name, answered, len(got[name]), tokens, wait))
        llms["batched"].close()
    finally:
        livekit.stop()

    def fmt(xs: list[float], q: float) -> str:
        return f"{_pct(xs, q):.2f} s" if xs else "n/a"

    lines = ["| conversations | LLM engine | voice to voice p50 | p95 | answered | "
             "LLM tokens/s over the run | LLM wait for a sequence or the lock (mean) |",
             "|---|---|---|---|---|---|---|"]
    for n, name, answered, total, tokens, wait in rows:
        lines.append(f"| {n} | {name} | {fmt(answered, .5)} | {fmt(answered, .95)} | "
                     f"{len(answered)}/{total} | {tokens} | {wait} |")
    notes = (f"{questions_each} questions per conversation, conversations starting "
             f"{STAGGER_S:g} s apart, {rounds} round(s) per engine and N, alternating; the same "
             "STT and TTS engines serve both. Voice to voice at the clients: the last sample of a "
             "question leaving its microphone track → the first audible sample of the answer. "
             "An answer not heard within 60 s counts as not answered.")
    return "\n".join(lines), notes
