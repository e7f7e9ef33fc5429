"""The bot converses over a real LiveKit server (built from its Go module), on the `test` models,
with a Python LiveKit participant standing in for the browser."""

from __future__ import annotations

import asyncio
import re

import httpx
import jiwer
import numpy as np
import pytest

from conftest import BECKETT, LIVEKIT_KEY, LIVEKIT_SECRET
from lk_client import BOT_RATE, Client
from stack.bot import BotManager
from stack.protocol import MESSAGE_ADAPTER
from stack.server import create_app

pytestmark = pytest.mark.e2e
KEY = "test access key"


@pytest.fixture
async def stack(livekit, engines, settings):
    s = settings.model_copy(update=dict(
        livekit_url=livekit.url, livekit_api_key=LIVEKIT_KEY, livekit_api_secret=LIVEKIT_SECRET,
        access_key=KEY, rate_limit_per_minute=1000, session_idle_seconds=60))
    manager = BotManager(s, engines)
    app = create_app(s, models_ready=lambda: True, on_conversation=lambda room: manager.ensure(room))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot")

    async def token(room: str, identity: str) -> tuple[str, str]:
        r = await http.post("/api/token", json={"room": room, "identity": identity},
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
    reference = np.concatenate([c.audio for m in turn for c in engines.tts.synthesize(m.text)])
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
