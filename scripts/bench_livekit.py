"""Voice-to-voice latency through a real LiveKit server: our pipeline vs Pipecat's stock services.

Used by ``scripts/bench.py --livekit``. Both pipelines run in the same bot sessions (BotManager),
over the same LiveKit server, on the same model files:

- ours: stack.pipeline (faster-whisper, llama.cpp in-process, Kokoro with its own durations);
- stock: Pipecat's ``WhisperSTTService`` (same CTranslate2 model), ``OpenAILLMService`` talking
  to llama-cpp-python's OpenAI-compatible server (same GGUF), ``KokoroTTSService`` (kokoro-onnx,
  the same int8 ONNX graph and voices).

Interleaved, so that the machine's drift hits both alike: rounds of the eight QUESTIONS, each
round a fresh conversation per pipeline, the two asked the same question one after the other
(which goes first rotates). A client (tests/lk_client.py) speaks each question and measures,
at the client, the end of its speech -> the first audible bot sample. Bot, LiveKit client and
benchmark share one process and one monotonic clock, so the waterfall of each turn (VAD stop,
end of turn, transcript, LLM first token, first text to TTS, TTS first audio, first audio sent,
heard) is on the same time line: the bot's moments come from a Pipecat observer (Waterfall).
The ratio ours/stock of the voice-to-voice medians comes with a bootstrap 95 % interval over the
paired questions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lk_client import Client  # noqa: E402

from stack.bot import BotManager  # noqa: E402
from stack.config import Settings  # noqa: E402
from stack.engines.load import load_engines  # noqa: E402
from stack.engines.stt import resample  # noqa: E402
from stack.engines.tts import MAX_TOKENS, ChunkPlan  # noqa: E402
from stack.livekit_server import LiveKitServer, find_binary, free_port  # noqa: E402
from stack.pipeline import Conversation, build_pipeline  # noqa: E402

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
MAX_ANSWER_TOKENS = 48
# The streaming rules before 2026-11-26, for --baseline: the first chunk up to 60 phonemes, the
# rest of the first sentence (up to MAX_TOKENS) as the second, Kokoro's own ~350 ms of silence
# before each later chunk, and nothing spoken before the LLM's first sentence is complete.
BASELINE_TTS = dict(plan=lambda: ChunkPlan(first_tokens=60, growth=MAX_TOKENS,
                                           later_lead_frames=None), early_start=False)


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
    missing = [m for m in ("sse_starlette", "starlette_context", "openai")
               if importlib.util.find_spec(m) is None]
    if missing:  # stock Pipecat's side needs the `bench` extra, which scripts/setup.sh installs
        raise SystemExit(f"stock Pipecat's reference pipeline needs {', '.join(missing)}: "
                         "install the bench extra (EXTRAS=\"test bench\" bash scripts/setup.sh)")
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


# The waterfall's moments in the order a turn passes them; "heard" is measured at the client.
MOMENTS = (
    ("vad_stop", "VAD stop (after stop_secs of silence)", VADUserStoppedSpeakingFrame),
    ("turn_end", "end of turn decided", UserStoppedSpeakingFrame),
    ("transcript", "final transcript", TranscriptionFrame),
    ("llm_first", "LLM first token", LLMTextFrame),
    ("tts_start", "first text to TTS", TTSStartedFrame),
    ("tts_audio", "TTS first audio", TTSAudioRawFrame),
    ("sent", "first audio to LiveKit", BotStartedSpeakingFrame),
    ("heard", "first audible at the client", None),
)
ROUND = len(QUESTIONS)
GAP_S = 0.02  # a pause in an answer's voice shorter than one 20 ms frame is not one


class Waterfall(BaseObserver):
    """When each waterfall frame was first pushed in one conversation, on time.monotonic().

    Observers run behind a queue, so the push time is the frame's pipeline-clock stamp, moved
    onto time.monotonic() by the smallest (now - stamp) seen: the clock's offset plus the least
    queueing delay."""

    def __init__(self):
        super().__init__(observe_every_push=False)
        self.events: list[tuple[str, int]] = []  # (moment, pipeline clock ns)
        self._offset: int | None = None
        self._kinds = [(name, cls) for name, _, cls in MOMENTS if cls is not None]

    async def on_push_frame(self, data: FramePushed):
        offset = time.monotonic_ns() - data.timestamp
        self._offset = offset if self._offset is None else min(self._offset, offset)
        for name, cls in self._kinds:
            if isinstance(data.frame, cls):
                self.events.append((name, data.timestamp))

    def after(self, t: float) -> dict[str, float]:
        """Each moment's first time at or after ``t`` (monotonic seconds), relative to ``t``."""
        found: dict[str, float] = {}
        for name, stamp in self.events:
            at = (stamp + (self._offset or 0)) / 1e9 - t
            if at >= -0.05 and name not in found:
                found[name] = at
        return found


@dataclass
class Turn:
    pipeline: str
    key: tuple[int, int]  # (round, question): the pairing of the two pipelines' turns
    moments: dict[str, float] = field(default_factory=dict)  # s since the end of speech
    anchor: float | None = None  # ours: first word heard vs arrival + lead_ms + its start
    gap: float | None = None  # ours: s the answer's voice stopped, synthesis behind playback
    first_text: str | None = None  # ours: the words of the answer's first chunk

    @property
    def v2v(self) -> float | None:
        """s, end of speech at the client -> first audible bot sample there (None: no answer)."""
        return self.moments.get("heard")


class Participant:
    """One pipeline's conversation in its room: the bot session, its observer, the client."""

    def __init__(self, name: str, manager: BotManager):
        self.name, self.manager = name, manager
        self.room = ""
        self.client: Client | None = None
        self.waterfall: Waterfall | None = None
        self.gaps = None  # ours: the TTS service's gap per completed answer

    async def start(self, livekit_url: str, room: str) -> None:
        from livekit import api as lkapi

        self.room = room
        token = (lkapi.AccessToken(KEY, SECRET).with_identity("bench").with_grants(
            lkapi.VideoGrants(room_join=True, room=room)).to_jwt())
        session = await self.manager.ensure(room)
        self.gaps = getattr(session.conversation.tts, "gaps_s", None)
        self.waterfall = Waterfall()
        session.worker.add_observer(self.waterfall)
        self.client = Client()
        await self.client.join(livekit_url, token)
        await self.client.silence(1.0)

    async def ask(self, audio: np.ndarray, key: tuple[int, int]) -> Turn:
        client = self.client
        answers = len(self.gaps) if self.gaps is not None else 0
        await client.speak(audio)
        t_end = time.monotonic() + client.source.queued_duration  # last sample leaves the mic
        await client.silence(0.2)
        first = await answer_heard(client, t_end)
        turn = Turn(self.name, key, self.waterfall.after(t_end))
        if first is not None:
            turn.moments["heard"] = first - t_end
            # lip-sync anchor: the first word should be heard at arrival + lead_ms + its start
            chunk = next(((t, m) for t, m in client.got.messages
                          if t > t_end and m.get("type") == "speech.chunk" and m["seq"] == 0),
                         None)
            if chunk is not None:
                t, m = chunk
                turn.anchor = first - (t + (m.get("lead_ms", 0) + m["wtimes"][0]) / 1000)
                turn.first_text = m["text"]
        if self.gaps is not None and len(self.gaps) > answers:
            turn.gap = self.gaps[-1]
        return turn

    async def stop(self) -> None:
        await self.client.leave()
        await self.manager.stop(self.room)


async def answer_heard(client, t_end: float) -> float | None:
    """When the first audible sample of the answer arrived after ``t_end`` (None: none within
    60 s); returns once the reply is over (1.5 s without audible bot audio). ``client``: a LiveKit
    participant (tests/lk_client.py) or a direct peer (tests/peer_client.py)."""
    def last() -> float:
        return client.got.last_voiced() or 0.0

    got = await client.wait_for(lambda: last() > t_end, 60)
    first = min((t for t, _ in client.got.voiced() if t > t_end), default=None) if got else None
    while True:
        await client.silence(0.5)
        if time.monotonic() - last() > 1.5:
            return first


async def _interleaved(pipelines: list[Participant], livekit_url: str,
                       questions: list[np.ndarray], turns: int) -> list[Turn]:
    results: list[Turn] = []
    for r in range((turns + ROUND - 1) // ROUND):
        for k, p in enumerate(pipelines):  # a fresh conversation per round: short histories
            await p.start(livekit_url, f"bench-{k}-{r}")
        for i in range(min(ROUND, turns - r * ROUND)):
            first = (r * ROUND + i) % len(pipelines)  # which goes first rotates
            order = pipelines[first:] + pipelines[:first]
            for p in order:
                results.append(await p.ask(questions[i], (r, i)))
                print(f"round {r} question {i} {p.name}: "
                      f"{results[-1].v2v if results[-1].v2v is not None else 'no answer'}",
                      file=sys.stderr)
        for p in pipelines:
            await p.stop()
    return results


def _trimmed(audio: np.ndarray, rate: int = 16000) -> np.ndarray:
    """The question without Kokoro's trailing silence (about 0.3 s): the last sample the client
    sends is then the end of speech, which the VAD stop must follow."""
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio[: loud[-1] + rate // 50] if len(loud) else audio


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q * 100)) if values else float("nan")


def ratio_interval(pairs: list[tuple[float, float]], n: int = 4000,
                   seed: int = 0) -> tuple[float, float, float]:
    """median(a)/median(b) over paired samples, and its bootstrap 95 % interval (resampling the
    pairs: both pipelines answered the same question, one after the other)."""
    a, b = np.array(pairs).T
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    return (float(np.median(a) / np.median(b)), float(np.percentile(ratios, 2.5)),
            float(np.percentile(ratios, 97.5)))


def with_variant(settings: Settings, variant: str) -> Settings:
    """``settings`` with a --variant's "key=value key=value" on top (validated as Settings)."""
    return Settings(**{**settings.model_dump(), **dict(kv.split("=", 1) for kv in variant.split())},
                    _env_file=None)


def waterfall_lines(moments: dict[str, list[dict[str, float]]]) -> list[str]:
    """A Markdown table of the waterfall, a pair of columns per contender: each moment since
    the end of speech (p50 / p95), and its step from the latest earlier moment (p50)."""

    def ms(xs: list[float]) -> str:
        return f"{_pct(xs, .5) * 1000:.0f} / {_pct(xs, .95) * 1000:.0f}" if xs else "n/a"

    lines = ["| moment, since the end of speech at the client | "
             + " | ".join(f"{n} p50 / p95 (ms) | {n} step p50 (ms)" for n in moments) + " |",
             "|---|" + "---|---|" * len(moments)]
    for k, (key, label, _) in enumerate(MOMENTS):
        earlier = [x for x, _, _ in MOMENTS[:k]]
        cells = []
        for turns in moments.values():
            mine = [m for m in turns if key in m]
            steps = [m[key] - max((m[x] for x in earlier if x in m), default=0.0) for m in mine]
            cells += [ms([m[key] for m in mine]),
                      f"{_pct(steps, .5) * 1000:.0f}" if steps else "n/a"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def report(results: list[Turn], load: tuple[float, float]) -> tuple[str, str]:
    names = list(dict.fromkeys(t.pipeline for t in results))

    def ms(xs: list[float]) -> str:
        return f"{_pct(xs, .5) * 1000:.0f} / {_pct(xs, .95) * 1000:.0f}" if xs else "n/a"

    lines = ["| pipeline | turns answered | voice to voice p50 / p95 (ms) | answers with a gap "
             "in their voice | gap p95 (ms) |", "|---|---|---|---|---|"]
    for name in names:
        mine = [t for t in results if t.pipeline == name]
        v2v = [t.v2v for t in mine if t.v2v is not None]
        gaps = [t.gap for t in mine if t.gap is not None]
        gapped = (f"{sum(g > GAP_S for g in gaps)}/{len(gaps)}", f"{_pct(gaps, .95) * 1000:.0f}"
                  ) if gaps else ("n/a", "n/a")
        lines.append(f"| {name} | {len(v2v)}/{len(mine)} | {ms(v2v)} | {gapped[0]} | {gapped[1]} |")
    lines += [""] + waterfall_lines(
        {name: [t.moments for t in results if t.pipeline == name] for name in names})
    notes = [f"{len(results) // max(len(names), 1)} turns per pipeline, interleaved question by "
             f"question in rounds of {ROUND} different questions (a fresh conversation each "
             f"round). Load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end, "
             f"on {os.cpu_count()} cores shared by the bot, LiveKit, the client and, for stock, "
             "llama-cpp-python's server.",
             "Voice to voice: at the client, the last sample of the question leaving its "
             "microphone track -> the first audible sample of the bot's answer arriving. "
             "Waterfall: when each moment first happened after the end of speech (Pipecat frames "
             "seen by an observer, on the same clock); a step is the time from the latest earlier "
             "moment."]
    v2v = {(t.pipeline, t.key): t.v2v for t in results if t.v2v is not None}
    for other in names[1:]:
        pairs = [(v2v[(names[0], k)], v2v[(other, k)])
                 for (n, k) in v2v if n == names[0] and (other, k) in v2v]
        if len(pairs) >= 3:
            r, lo, hi = ratio_interval(pairs)
            notes.append(f"Ratio {names[0]}/{other} of the voice-to-voice medians: **{r:.2f}** "
                         f"(bootstrap 95 % interval {lo:.2f} … {hi:.2f}, {len(pairs)} paired "
                         "questions).")
    if "ours, before" in names:
        notes.append("ours, before: the same engines with the streaming rules of 2026-11-25 "
                     "(nothing spoken before the LLM's first sentence is complete, a first chunk "
                     "of up to 60 phonemes, then the rest of that sentence as one chunk, ~350 ms "
                     "of silence before each later chunk).")
    notes.append(f"Answers of at most {MAX_ANSWER_TOKENS} tokens, for every pipeline. Gap: how "
                 "long an answer's voice stopped because Kokoro fell behind playback "
                 "(our TTS service measures it; stock's has no such measure).")
    anchor = [t.anchor for t in results if t.anchor is not None and t.pipeline == names[0]]
    if anchor:
        notes.append(f"Lip-sync anchor ({names[0]}): the first word was heard "
                     f"{_pct(anchor, .5) * 1000:+.0f} ms (p50), {_pct(anchor, .95) * 1000:+.0f} ms "
                     "(p95) from arrival + lead_ms + its start time; the rest is the receive path "
                     "(network, jitter buffer), which the browser measures itself.")
    return "\n".join(lines), " ".join(notes)


def dump(results: list[Turn], path: Path) -> None:
    """Every turn, for a look at what the medians hide (which answers were slow, and why)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([dataclasses.asdict(t) for t in results], indent=1))


def run_livekit_bench(settings: Settings, turns: int, baseline: bool = False,
                      variants: list[str] = (), dump_to: Path | None = None) -> tuple[str, str]:
    """``variants``: more of ours, each "key=value key=value" of Settings on its own engines
    (e.g. "stt_threads=2"), named by it in the tables."""
    binary = find_binary()
    if binary is None:
        raise SystemExit("livekit-server not found: run scripts/test.sh once (it builds it)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    livekit = LiveKitServer(binary, tmp, KEY, SECRET)
    llama, llm_url = _start_llama_server(settings, tmp)
    # Answers of up to MAX_ANSWER_TOKENS: the tiny test model sometimes repeats a sentence until
    # its limit (256), and minute-long answers would only stretch the run (the measure ends at
    # the first audio).
    s = settings.model_copy(update=dict(livekit_url=livekit.url, livekit_api_key=KEY,
                                        livekit_api_secret=SECRET, session_empty_seconds=30,
                                        llm_max_tokens=MAX_ANSWER_TOKENS))
    try:
        engines = load_engines(s)
        questions = [_trimmed(resample(np.concatenate([c.audio for c in engines.tts.synthesize(
            q, voice="am_michael")]), 24000, 16000)) for q in QUESTIONS]
        pipelines = [Participant("ours", BotManager(s, engines)),
                     Participant("stock Pipecat", BotManager(
                         s, None, builder=stock_builder(s, llm_url, _voices_npz(s, tmp))))]
        if baseline:
            pipelines.append(Participant("ours, before", BotManager(s, None, builder=lambda **kw:
                build_pipeline(engines, s, tts_options=BASELINE_TTS, **kw))))
        for variant in variants:
            vs = with_variant(s, variant)
            pipelines.append(Participant(f"ours, {variant}", BotManager(vs, load_engines(vs))))
        load_start = os.getloadavg()[0]
        results = asyncio.run(_interleaved(pipelines, livekit.url, questions, turns))
        load_end = os.getloadavg()[0]
        if dump_to is not None:
            dump(results, dump_to)
    finally:
        llama.terminate()
        livekit.stop()
    return report(results, (load_start, load_end))
