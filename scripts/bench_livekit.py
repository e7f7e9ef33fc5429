"""Voice-to-voice latency through a real LiveKit server: our pipeline vs Pipecat's stock services.

Used by ``scripts/bench.py --livekit``. Both pipelines run in the same bot sessions (BotManager),
over the same LiveKit server, on the same model files:

- ours: stack.pipeline (faster-whisper, llama.cpp in-process, Kokoro with its own durations);
- stock: Pipecat's ``WhisperSTTService`` (same CTranslate2 model), ``OpenAILLMService`` talking
  to llama-cpp-python's OpenAI-compatible server (same GGUF), ``KokoroTTSService`` (kokoro-onnx,
  the same int8 ONNX graph and voices).

A client (tests/lk_client.py) speaks each question into the room and measures, at the client,
the end of its speech -> the first audible bot sample. The stage breakdown comes from Pipecat's
own metrics (RTVI ``metrics`` messages): STT processing time, LLM and TTS time to first byte.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lk_client import Client  # noqa: E402

from stack.bot import BotManager  # noqa: E402
from stack.config import Settings  # noqa: E402
from stack.engines.load import load_engines  # noqa: E402
from stack.engines.stt import resample  # noqa: E402
from stack.livekit_server import LiveKitServer, find_binary, free_port  # noqa: E402
from stack.pipeline import Conversation  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Can you tell me a fun fact about cats?",
    "How are you doing today?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "What is your favourite season of the year?",
    "Can you recommend a good book to read?",
    "How far away is the moon?",
]
KEY, SECRET = "APIbench", "b" * 40


def stock_builder(settings: Settings, llm_url: str, voices_npz: Path):
    """Pipecat's stock services on the same models, in the same pipeline shape as ours."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.services.kokoro.tts import KokoroTTSService
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.whisper.stt import WhisperSTTService
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    profile = settings.profile
    root = settings.models_dir
    onnx = next(src for dst, src in profile.derived if dst == profile.tts_model)

    def build(*, transport_input, transport_output) -> Conversation:
        context = LLMContext()
        pair = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.2)),
            user_turn_strategies=UserTurnStrategies()))
        stt = WhisperSTTService(settings=WhisperSTTService.Settings(
            model=str(root / profile.stt_model), language="en"), device="cpu", compute_type="int8")
        llm = OpenAILLMService(
            base_url=llm_url, api_key="local", settings=OpenAILLMService.Settings(
            model="local", system_instruction=settings.system_prompt,
            temperature=settings.temperature, max_tokens=settings.llm_max_tokens))
        tts = KokoroTTSService(model_path=str(root / onnx), voices_path=str(voices_npz),
                               settings=KokoroTTSService.Settings(voice=profile.default_voice))
        pipeline = Pipeline([transport_input, stt, pair.user(), llm, tts, transport_output,
                             pair.assistant()])
        return Conversation(pipeline, context, tts)

    return build


def _voices_npz(settings: Settings, tmp: Path) -> Path:
    voices = settings.models_dir / settings.profile.voices_dir
    path = tmp / "voices.npz"
    np.savez(path, **{p.stem: np.fromfile(p, dtype=np.float32).reshape(510, 1, 256)
                      for p in voices.glob("*.bin")})
    return path


def _start_llama_server(settings: Settings, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model",
         str(settings.models_dir / settings.profile.llm_model), "--host", "127.0.0.1", "--port",
         str(port), "--n_ctx", str(settings.llm_context_tokens), "--model_alias", "local"],
        stdout=open(tmp / "llama-server.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not start; see {tmp / 'llama-server.log'}")


def _metrics(messages: list[tuple[float, dict]], since: float) -> dict[str, list[float]]:
    """ttfb / processing values (s) of RTVI metrics messages, by stage."""
    out: dict[str, list[float]] = {"stt": [], "llm": [], "tts": []}
    for t, m in messages:
        if t < since or m.get("label") != "rtvi-ai" or m.get("type") != "metrics":
            continue
        data = m.get("data", {})
        for kind in ("ttfb", "processing"):
            for item in data.get(kind, []) or []:
                name = item.get("processor", "").lower()
                stage = ("stt" if "stt" in name else "llm" if "llm" in name else
                         "tts" if "tts" in name else None)
                if stage and ((stage == "stt") == (kind == "processing")):
                    out[stage].append(float(item.get("value", 0)))
    return out


async def _run_turns(manager: BotManager, livekit_url: str, room: str, questions: list[np.ndarray]):
    from livekit import api as lkapi

    token = (lkapi.AccessToken(KEY, SECRET).with_identity("bench").with_grants(
        lkapi.VideoGrants(room_join=True, room=room)).to_jwt())
    await manager.ensure(room)
    client = Client()
    await client.join(livekit_url, token)
    await client.silence(1.0)
    results = []
    for audio in questions:
        await client.speak(audio)
        t_end = time.monotonic() + client.source.queued_duration  # last sample leaves the mic
        await client.silence(0.2)
        got = await client.wait_for(
            lambda end=t_end: any(t > end for t, _ in client.got.voiced()), 60)
        first = min((t for t, _ in client.got.voiced() if t > t_end), default=None) if got else None
        # wait for the reply to finish: 1.5 s without audible bot audio
        while True:
            await client.silence(0.5)
            last = max((t for t, _ in client.got.voiced()), default=0)
            if time.monotonic() - last > 1.5:
                break
        stages = _metrics(client.got.messages, t_end)
        # Anchor check: a reply's first word should be heard at arrival + lead_ms + its start.
        first_chunk = next(((t, m) for t, m in client.got.messages
                            if t > t_end and m.get("type") == "speech.chunk" and m["seq"] == 0),
                           None)
        if first_chunk is not None and first is not None:
            t, m = first_chunk
            stages["anchor"] = [first - (t + (m.get("lead_ms", 0) + m["wtimes"][0]) / 1000)]
        results.append((None if first is None else first - t_end, stages))
    await client.leave()
    await manager.stop(room)
    return results


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_livekit_bench(settings: Settings, turns: int) -> tuple[str, str]:
    binary = find_binary()
    if binary is None:
        raise SystemExit("livekit-server not found: run scripts/test.sh once (it builds it)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    livekit = LiveKitServer(binary, tmp, KEY, SECRET)
    llama, llm_url = _start_llama_server(settings, tmp)
    s = settings.model_copy(update=dict(livekit_url=livekit.url, livekit_api_key=KEY,
                                        livekit_api_secret=SECRET, session_empty_seconds=30))
    try:
        engines = load_engines(s)
        questions = [resample(np.concatenate([c.audio for c in engines.tts.synthesize(
            q, voice="am_michael")]), 24000, 16000) for q in (QUESTIONS * 4)[:turns]]
        ours = BotManager(s, engines)
        stock = BotManager(s, None, builder=stock_builder(s, llm_url, _voices_npz(s, tmp)))
        rows = {}
        for name, manager in (("ours", ours), ("stock Pipecat", stock)):
            rows[name] = asyncio.run(_run_turns(manager, livekit.url, f"bench-{name[:5]}",
                                                questions))
    finally:
        llama.terminate()
        livekit.stop()

    def fmt(xs: list[float]) -> str:
        return f"{_pct(xs, .5) * 1000:.0f} / {_pct(xs, .95) * 1000:.0f}" if xs else "n/a"

    lines = ["| pipeline | voice to voice p50 / p95 (ms) | STT p50 / p95 | LLM TTFB p50 / p95 | "
             "TTS TTFB p50 / p95 | turns answered |", "|---|---|---|---|---|---|"]
    anchor = [x for _, st in rows.get("ours", []) for x in st.get("anchor", [])]
    p50 = {}
    for name, results in rows.items():
        v2v = [r for r, _ in results if r is not None]
        stage = {k: [x for _, st in results for x in st[k]] for k in ("stt", "llm", "tts")}
        p50[name] = _pct(v2v, .5) if v2v else None
        lines.append(f"| {name} | {fmt(v2v)} | {fmt(stage['stt'])} | {fmt(stage['llm'])} | "
                     f"{fmt(stage['tts'])} | {len(v2v)}/{len(results)} |")
    notes = ("Voice to voice: at the client, the last sample of the question leaving its "
             "microphone track -> the first audible sample of the bot's answer arriving. Stage "
             "times are Pipecat's metrics (STT: processing; LLM/TTS: time to first byte).")
    if p50.get("ours") and p50.get("stock Pipecat"):
        notes += f" Ratio ours/stock (p50): {p50['ours'] / p50['stock Pipecat']:.2f}."
    if anchor:
        notes += (" Lip-sync anchor (ours): the first word was heard "
                  f"{_pct(anchor, .5) * 1000:+.0f} ms (p50), {_pct(anchor, .95) * 1000:+.0f} ms "
                  "(p95) from arrival + lead_ms + its start time; the rest is the receive path "
                  "(network, jitter buffer), which the browser measures itself.")
    return "\n".join(lines), notes
