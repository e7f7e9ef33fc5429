"""TRANSPORT=smallwebrtc: the bot converses over a direct WebRTC connection (Pipecat's
SmallWebRTC on aiortc, no media server), on the `test` models, with an aiortc peer standing in
for the browser (tests/peer_client.py). The browser itself: tests/test_web_e2e.py."""

from __future__ import annotations

import re
import time
import uuid
from contextlib import asynccontextmanager

import httpx
import jiwer
import numpy as np
import pytest
from conftest import BECKETT, speech
from lk_client import wait_until
from peer_client import PeerClient, offers_to
from turn_server import coturn, self_signed_files

import stack.ice
from stack.bot import JOIN_TIMEOUT_S, BotManager
from stack.livekit_server import free_port
from stack.preflight import coturn_config, host_addresses
from stack.protocol import MESSAGE_ADAPTER
from stack.server import create_app
from stack.transport import awaiting_hidden_hosts

pytestmark = pytest.mark.e2e
KEY = "test access key"


@asynccontextmanager
async def _serving(engines, settings, **update):
    """The bot and its API in this process, over SmallWebRTC: (manager, offer, http)."""
    s = settings.model_copy(update=dict(
        transport="smallwebrtc", access_key=KEY, rate_limit_per_minute=1000,
        session_idle_seconds=60, session_empty_seconds=2, max_conversations=2, **update))
    manager = BotManager(s, engines)
    app = create_app(s, models_ready=lambda: True, on_offer=manager.answer)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot",
                             headers={"Authorization": f"Bearer {KEY}"})

    try:
        yield manager, offers_to(http), http
    finally:
        await manager.stop_all()
        await http.aclose()


@pytest.fixture
async def peer_stack(engines, settings):
    async with _serving(engines, settings) as (manager, offer, _http):
        yield manager, offer


def _norm(text: str) -> str:
    return re.sub(r"[^\w\s']", "", text.lower()).strip()


async def test_a_conversation_over_a_direct_connection(peer_stack, beckett):
    manager, offer = peer_stack
    client = PeerClient()
    await client.join(offer)
    assert len(manager.active_rooms()) == 1
    await client.silence(0.5)
    await client.speak(beckett, trailing_s=1.0)
    assert await client.wait_for(lambda: client.got.of_type("speech.chunk") and client.got.voiced(),
                                 timeout=60), "no bot speech"
    await client.silence(3.0)

    heard = " ".join(client.got.user_transcripts())
    assert jiwer.wer(_norm(BECKETT), _norm(heard)) <= 0.3, heard
    chunks = [(t, MESSAGE_ADAPTER.validate_python(m))
              for t, m in client.got.of_type("speech.chunk")]
    # the timing messages come over the data channel before their audio, stamped with what the
    # outgoing track still held ahead of them (Pipecat writes 40 ms at a time)
    assert min(t for t, m in chunks if m.seq == 0) < client.got.voiced()[0][0]
    for _, m in chunks:
        assert 0 <= m.lead_ms <= 80 and abs(sum(m.vdurations) - m.duration_ms) < 1
    # RTVI's events travel the same channel
    labels = {m.get("type") for _, m in client.got.messages if m.get("label") == "rtvi-ai"}
    assert {"user-started-speaking", "user-transcription", "bot-started-speaking"} <= labels, labels
    await client.leave()


async def test_typed_text_is_answered_over_the_data_channel(peer_stack):
    _manager, offer = peer_stack
    client = PeerClient()
    await client.join(offer)
    await client.wait_for(lambda: client.channel.readyState == "open", timeout=15)
    client.ask_in_text()
    assert await client.wait_for(lambda: client.got.voiced(), timeout=60), "no spoken answer"
    await client.silence(2.0)
    assert "paris" in _norm(client.spoken_words()), client.spoken_words()
    await client.leave()


async def test_barge_in_stops_the_bots_voice(peer_stack, engines, barge_in):
    manager, offer = peer_stack
    client = PeerClient()
    await client.join(offer)
    await client.silence(0.5)
    await client.speak(speech(engines, "Please tell me a very long story about a brave dragon."),
                       trailing_s=0.5)
    assert await client.wait_for(lambda: client.got.voiced(), timeout=60), "bot never spoke"
    first_turn = client.got.of_type("speech.chunk")[0][1]["turn_id"]
    await client.silence(1.5)  # let it talk a little
    t_barge = time.monotonic()
    await client.speak(barge_in, trailing_s=0.3)

    stops = [(t, m) for t, m in client.got.of_type("speech.stop") if m["turn_id"] == first_turn]
    assert stops and stops[0][1]["reason"] == "interrupted", client.got.of_type("speech.stop")
    # it says how far the turn's voice had gone out: the page's mouth goes on until there
    low, high = client.got.sent_span(first_turn, stops[0][0])
    assert 0 < stops[0][1]["sent_ms"] and low - 0.1 <= stops[0][1]["sent_ms"] <= high + 0.1, \
        (stops[0][1], low, high)
    # the bot's audio of that turn stops: quiet a second after the stop message
    window = (stops[0][0] + 1.0, stops[0][0] + 1.8)
    assert await client.wait_for(lambda: client.got.audio[-1][0] > window[1], timeout=10)
    reply = client.got.first_reply_besides(first_turn)  # none can come while the person talks
    assert reply is None or reply > window[1], f"a reply {reply - t_barge:.2f} s into the barge-in"
    after = [f for t, f in client.got.audio if window[0] < t < window[1]]
    assert after and max(np.abs(f).max() for f in after) < 300
    # and the conversation goes on: the barge-in utterance gets its own reply
    assert await client.wait_for(lambda: client.got.replied_besides(first_turn), timeout=60), \
        "no reply after the barge-in"
    await client.leave()


async def test_closing_the_connection_ends_the_session_and_capacity_holds(peer_stack):
    manager, offer = peer_stack
    a, b, c = PeerClient(), PeerClient(), PeerClient()
    await a.join(offer)
    await b.join(offer)
    # MAX_CONVERSATIONS=2: a third is told the avatars are busy, and when to come back
    refused = await offer(await c.make_offer(), expect=503)
    assert refused["code"] == "busy" and "all avatars are busy" in refused["detail"]
    assert len(manager.active_rooms()) == 2

    await a.leave()  # the browser closes its connection (a tab closed, "Stop" pressed)
    assert await wait_until(lambda: len(manager.active_rooms()) == 1, 15), manager.active_rooms()
    await c.join(offer)  # its place is free again
    assert len(manager.active_rooms()) == 2
    await b.leave()
    await c.leave()
    assert await wait_until(lambda: not manager.sessions, 15), manager.sessions


async def test_an_offer_whose_browser_never_connects_is_ended(peer_stack):
    manager, offer = peer_stack
    ghost = PeerClient()
    await offer(await ghost.make_offer())  # answered, but the answer is never applied
    assert len(manager.active_rooms()) == 1
    limit = JOIN_TIMEOUT_S + manager.settings.session_empty_seconds
    assert await wait_until(lambda: not manager.active_rooms(), limit + 10)
    await ghost.leave()


async def test_an_unanswerable_offer_is_400_and_leaves_nothing(peer_stack):
    manager, offer = peer_stack
    client = PeerClient()
    body = await client.make_offer()
    # the audio section offers only a codec the bot does not speak
    sdp = re.sub(r"m=audio (\d+) (\S+) [\d ]+", r"m=audio \1 \2 127", body["sdp"])
    sdp = "\r\n".join(line for line in sdp.split("\r\n")
                      if not re.match(r"a=(rtpmap|fmtp|rtcp-fb):(?!127 )", line))
    sdp = sdp.replace("a=mid:0", "a=rtpmap:127 nonsense/8000\r\na=mid:0")
    err = await offer({"sdp": sdp, "type": "offer"}, expect=400)
    assert "cannot be answered" in err["detail"], err
    assert not manager.sessions
    await client.leave()


async def test_a_browser_hiding_its_addresses_behind_mdns_names_connects(peer_stack):
    """Firefox (and Chrome before the microphone is allowed) offers its host candidates as
    `<uuid>.local` names, which the bot cannot resolve off their link, and Firefox says
    end-of-candidates too: the bot must wait for its checks instead of failing at once."""
    _manager, offer = peer_stack
    client = PeerClient()
    body = await client.make_offer()
    lines = body["sdp"].splitlines()
    hidden = [re.sub(r"^(a=candidate:\S+ \d+ \S+ \d+ )\S+ ",
                     lambda m: f"{m[1]}{uuid.uuid4()}.local ", x) for x in lines]
    assert "a=end-of-candidates" in lines and any(".local " in x for x in hidden)
    await client.join(offer, {**body, "sdp": "\r\n".join(hidden) + "\r\n"}, timeout=20)
    await client.wait_for(lambda: client.channel.readyState == "open", timeout=15)
    client.ask_in_text()
    assert await client.wait_for(lambda: client.got.voiced(), timeout=60), "no spoken answer"
    await client.leave()


def test_only_an_offer_with_hidden_addresses_is_taken_as_still_gathering():
    host = "a=candidate:1 1 udp 2122260223 192.0.2.7 51000 typ host\r\n"
    hidden = ("a=candidate:1 1 udp 2122260223 0c9a7ad3-93b5-4a3b-8d46-2b4f4d1b2f10.local 51000 "
              "typ host\r\n")
    end = "a=end-of-candidates\r\n"
    assert awaiting_hidden_hosts(host + end) == host + end
    assert awaiting_hidden_hosts(hidden + host + end) == hidden + host


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_a_browser_that_reaches_only_the_turn_relay_converses_through_it(
        engines, settings, tmp_path, monkeypatch, transport):
    """A browser behind NAT or a firewall that lets only the TURN port through (or, with a
    certificate, only TLS): every packet goes through Debian's coturn, configured as the stack's
    preflight configures it, to the bot's host address (the one private peer it may relay to)."""
    addresses = host_addresses(settings)
    assert addresses, "this machine has no address but loopback"
    port, tls_port = free_port(), None
    monkeypatch.setattr(stack.ice, "TURN_PORT", port)
    turn = dict(turn_host=addresses[0], turn_secret="r" * 40)
    files = None
    if transport == "tls":
        # a certificate for the bot host's address, which this client alone trusts
        tls_port = free_port()
        files = self_signed_files([addresses[0]], tmp_path / "cert.pem", tmp_path / "key.pem")
        monkeypatch.setenv("SSL_CERT_FILE", str(files[0]))
        turn.update(turn_tls_cert=files[0], turn_tls_key=files[1], turn_tls_port=tls_port)
    config = coturn_config(settings.model_copy(update=turn), addresses, files)
    with coturn(config, tmp_path, port, tls_port=tls_port) as log:
        async with _serving(engines, settings, **turn) as (manager, offer, http):
            [server] = (await http.get("/webrtc/ice-servers")).json()["ice_servers"]
            # aiortc takes the first TURN address: the one over this transport
            scheme = "turns" if transport == "tls" else "turn"
            server["urls"] = [u for u in server["urls"] if u.split(":")[0] == scheme
                              and (transport == "tls" or u.endswith(transport))]
            assert len(server["urls"]) == 1, server["urls"]
            client = PeerClient(ice_servers=[server], relay_only=True)
            body = await client.make_offer()
            candidates = [x for x in body["sdp"].splitlines() if x.startswith("a=candidate")]
            assert candidates and all(" typ relay" in x for x in candidates), candidates
            await client.join(offer, body, timeout=20, diagnose=lambda: log.read_text()[-3000:])
            await client.wait_for(lambda: client.channel.readyState == "open", timeout=15)
            client.ask_in_text()
            assert await client.wait_for(lambda: client.got.voiced(), timeout=60), \
                "no spoken answer through the relay"
            await client.silence(2.0)
            assert "paris" in _norm(client.spoken_words()), client.spoken_words()
            await client.leave()
    text = log.read_text()
    # coturn took the credentials the API gave, and relayed to the bot's address
    assert "ALLOCATE processed, success" in text and f"peer {addresses[0]}:" in text, text[-3000:]
