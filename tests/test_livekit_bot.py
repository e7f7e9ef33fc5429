"""The bot converses over a real LiveKit server (built from its Go module), on the `test` models,
with a Python LiveKit participant standing in for the browser."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import jiwer
import numpy as np
import pytest

from conftest import BECKETT, LIVEKIT_KEY, LIVEKIT_SECRET
from lk_client import BOT_RATE, Client, wait_until
from stack.bot import BotManager
from stack.protocol import MESSAGE_ADAPTER
from stack.server import create_app

pytestmark = pytest.mark.e2e
KEY = "test access key"


@pytest.fixture
async def stack(livekit, engines, settings):
    s = settings.model_copy(update=dict(
        livekit_url=livekit.url, livekit_api_key=LIVEKIT_KEY, livekit_api_secret=LIVEKIT_SECRET,
        access_key=KEY, rate_limit_per_minute=1000, session_idle_seconds=60,
        session_empty_seconds=2))
    manager = BotManager(s, engines)
    app = create_app(s, models_ready=lambda: True, on_conversation=lambda room: manager.ensure(room))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot")

    async def token(room: str, identity: str) -> tuple[str, str]:
        r = await http.post("/token", json={"room": room, "identity": identity},
                            headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200, r.text
        return r.json()["url"], r.json()["token"]

    yield manager, token
    await manager.stop_all()
    await http.aclose()


def _audible_ms(audio: np.ndarray) -> float:
    """From the first to the last 5 ms window above 2% of the peak."""
    win = BOT_RATE // 200
    env = np.abs(audio[: len(audio) // win * win]).reshape(-1, win).max(axis=1)
    loud = np.flatnonzero(env > 0.02 * env.max())
    return (loud[-1] + 1 - loud[0]) * 5.0


def _norm(text: str) -> str:
    return re.sub(r"[^\w\s']", "", text.lower()).strip()


async def test_conversation_with_timings_before_audio(stack, engines, beckett):
    manager, token = stack
    client = Client()
    await client.join(*await token("room-a", "alice"))
    await client.silence(0.5)
    await client.speak(beckett, trailing_s=1.0)
    assert await client.wait_for(lambda: client.got.of_type("speech.chunk") and client.got.voiced(),
                                 timeout=60), "no bot speech"
    await client.silence(4.0)  # let the last reply play out
    await client.wait_for(lambda: False, timeout=3)

    heard = " ".join(client.got.user_transcripts())
    assert jiwer.wer(_norm(BECKETT), _norm(heard)) <= 0.3, heard

    chunks = [(t, MESSAGE_ADAPTER.validate_python(m)) for t, m in client.got.of_type("speech.chunk")]
    voiced = client.got.voiced()
    assert voiced, "bot audio is silent"
    # every turn's first timing message arrives before that turn's first audible sample
    first_msg = min(t for t, m in chunks if m.seq == 0)
    assert first_msg < voiced[0][0]
    for _, m in chunks:
        assert m.lead_ms >= 0 and abs(sum(m.vdurations) - m.duration_ms) < 1

    # The last turn played out entirely: what the client heard has the audible span of the audio
    # the timings describe (re-synthesized here: Kokoro is deterministic), and that audio is
    # exactly as long as the messages say.
    last_turn = chunks[-1][1].turn_id
    turn = [m for _, m in chunks if m.turn_id == last_turn]
    t_first = min(t for t, m in chunks if m.turn_id == last_turn)
    received = np.concatenate([f for t, f in client.got.audio if t >= t_first]).astype(np.float32)
    reference = np.concatenate([c.audio for m in turn  # a turn starts quick: see KokoroTTS
                                for c in engines.tts.synthesize(m.text, quick_start=m.seq == 0)])
    assert sum(m.samples for m in turn) == len(reference)
    heard, spoken = _audible_ms(received / 32768), _audible_ms(reference)
    assert abs(heard - spoken) < 60, (heard, spoken)
    await client.leave()


async def test_client_dropping_mid_sentence_leaves_server_healthy(stack, beckett):
    manager, token = stack
    client = Client()
    await client.join(*await token("room-drop", "bob"))
    await client.speak(beckett[: 16000 * 2], trailing_s=1.0)
    await client.wait_for(lambda: client.got.voiced(), timeout=60)
    await client.leave()  # while the bot is speaking
    assert await client.wait_for(lambda: "room-drop" not in manager.active_rooms(), timeout=15)

    again = Client()  # the next person is served normally
    await again.join(*await token("room-drop", "bob"))
    await again.speak(beckett[: 16000 * 2], trailing_s=1.0)
    assert await again.wait_for(lambda: again.got.of_type("speech.chunk"), timeout=60)
    await again.leave()


def _speech(engines, text: str) -> np.ndarray:
    """A spoken question at 16 kHz, made with the TTS (a different voice than the bot's)."""
    from stack.engines.stt import resample

    audio = np.concatenate([c.audio for c in engines.tts.synthesize(text, voice="am_michael")])
    return resample(audio, 24000, 16000)


async def test_barge_in_stops_audio_and_trims_the_context(stack, engines, beckett):
    manager, token = stack
    client = Client()
    await client.join(*await token("room-barge", "carol"))
    await client.silence(0.5)
    await client.speak(_speech(engines, "Please tell me a very long story about a brave dragon."),
                       trailing_s=0.5)
    assert await client.wait_for(lambda: client.got.voiced(), timeout=60), "bot never spoke"
    first_turn = client.got.of_type("speech.chunk")[0][1]["turn_id"]
    await client.silence(1.5)  # let it talk a little

    t_barge = time.monotonic()
    await client.speak(beckett[: int(16000 * 2.2)], trailing_s=0.3)  # "Ever tried. Ever failed."

    stops = [(t, m) for t, m in client.got.of_type("speech.stop") if m["turn_id"] == first_turn]
    assert stops, "no speech.stop for the interrupted turn"
    assert stops[0][0] - t_barge < 2.0
    # the bot's audio of that turn stops: quiet within a second of the stop message
    after = [f for t, f in client.got.audio if stops[0][0] + 1.0 < t < stops[0][0] + 1.8]
    assert after and max(np.abs(f).max() for f in after) < 300

    # the context keeps only what was sent as audio before the barge-in, not the whole reply
    sent = " ".join(w for _, m in client.got.of_type("speech.chunk") if m["turn_id"] == first_turn
                    for w in m["words"])
    generated = "".join(m["data"]["text"] for t, m in client.got.messages
                        if m.get("type") == "bot-llm-text" and t < stops[0][0])
    context = manager.sessions["room-barge"].conversation.context.get_messages()
    said = [m["content"] for m in context if m["role"] == "assistant"][0]
    said_words, sent_words = _norm(said).split(), _norm(sent).split()
    assert said_words and said_words == sent_words[: len(said_words)], (said, sent)
    assert len(said_words) < len(_norm(generated).split()), (said, generated)

    # and the conversation goes on: the barge-in utterance gets its own reply
    assert await client.wait_for(
        lambda: any(m["turn_id"] != first_turn for _, m in client.got.of_type("speech.chunk")),
        timeout=60), "no reply after the barge-in"
    await client.leave()


async def test_twenty_join_leave_cycles_leave_nothing_behind(stack):
    import threading

    manager, token = stack
    # a first cycle creates the process-wide pools (executor threads, LiveKit FFI) once
    c = Client()
    await c.join(*await token("room-cycle", "dave"))
    await c.leave()
    await wait_until(lambda: not manager.active_rooms(), 15)
    tasks_before = len(asyncio.all_tasks())
    threads_before = threading.active_count()

    for i in range(20):
        c = Client()
        await c.join(*await token("room-cycle", "dave"))
        assert manager.active_rooms() == ["room-cycle"]
        await c.leave()
        # a leave the server misses is noticed by LiveKit within ~20 s at worst
        assert await wait_until(lambda: not manager.active_rooms(), 30), f"cycle {i}: bot stayed"

    await asyncio.sleep(1)
    assert len(asyncio.all_tasks()) <= tasks_before
    assert threading.active_count() <= threads_before + 2  # allow executor threads to linger idle
    assert not manager.sessions  # ended sessions are forgotten, their pipelines freed


async def test_two_rooms_talk_at_once_without_crossing(stack, engines, beckett):
    manager, token = stack
    a, b = Client(), Client()
    await a.join(*await token("room-x", "erin"))
    await b.join(*await token("room-y", "frank"))
    await asyncio.gather(a.silence(0.5), b.silence(0.5))
    await asyncio.gather(
        a.speak(_speech(engines, "What is the capital of France?"), trailing_s=1.0),
        b.speak(beckett[: int(16000 * 2.2)], trailing_s=1.0))
    assert await a.wait_for(lambda: a.got.of_type("speech.chunk") and b.got.of_type("speech.chunk"),
                            timeout=90)
    await asyncio.gather(a.silence(3), b.silence(3))
    a_said, b_said = " ".join(a.got.user_transcripts()), " ".join(b.got.user_transcripts())
    assert "france" in _norm(a_said) and "ever" not in _norm(a_said)
    assert "ever" in _norm(b_said) and "france" not in _norm(b_said)
    a_turns = {m["turn_id"] for _, m in a.got.of_type("speech.chunk")}
    b_turns = {m["turn_id"] for _, m in b.got.of_type("speech.chunk")}
    assert a_turns and b_turns and not a_turns & b_turns
    ctx_a = manager.sessions["room-x"].conversation.context.get_messages()
    ctx_b = manager.sessions["room-y"].conversation.context.get_messages()
    assert "france" in _norm(ctx_a[0]["content"]) and "ever" in _norm(ctx_b[0]["content"])
    await asyncio.gather(a.leave(), b.leave())


async def test_silent_user_session_ends_after_idle_timeout(stack):
    manager, token = stack
    manager.settings = manager.settings.model_copy(update={"session_idle_seconds": 3})
    client = Client()
    await client.join(*await token("room-idle", "gina"))
    t0 = time.monotonic()
    silence = asyncio.create_task(client.silence(20))  # present, publishing, but not speaking
    assert await wait_until(lambda: "room-idle" not in manager.active_rooms(), 15)
    assert time.monotonic() - t0 >= 2.5  # not before the idle timeout
    silence.cancel()
    await client.leave()
