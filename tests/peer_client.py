"""A Python WebRTC peer (aiortc) standing in for the browser on the SmallWebRTC transport: the
same recordings as tests/lk_client.py's LiveKit participant, over a direct connection to the bot
(its offer: the microphone's audio section first, then a data channel, as the web page makes)."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Awaitable, Callable

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from av import AudioFrame, AudioResampler
from lk_client import BOT_RATE, MIC_RATE, Received, wait_until

FRAME_S = 0.02


class MicTrack(MediaStreamTrack):
    """Audio the test pushes (16 kHz int16), in real time; silence when there is none."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self._pending = np.zeros(0, np.int16)
        self._sent = 0
        self._start: float | None = None

    def push(self, pcm: np.ndarray) -> float:
        """Queue ``pcm``; the seconds until its last sample has gone out."""
        self._pending = np.concatenate([self._pending, pcm])
        return len(self._pending) / MIC_RATE

    async def recv(self) -> AudioFrame:
        n = int(MIC_RATE * FRAME_S)
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._sent / MIC_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk, self._pending = self._pending[:n], self._pending[n:]
        chunk = np.pad(chunk, (0, n - len(chunk)))
        frame = AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts = MIC_RATE, self._sent
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._sent += n
        return frame


Offer = Callable[[dict], Awaitable[dict]]


def offers_to(http) -> Callable[..., Awaitable[dict]]:
    """An Offer that POSTs to /webrtc/offer through ``http`` (an httpx.AsyncClient with the
    bot's address and access key): the answer's JSON, or with ``expect`` another status's body;
    any other status fails, with the bot's reason."""
    async def offer(body: dict, expect: int = 200) -> dict:
        r = await http.post("/webrtc/offer", json=body)
        assert r.status_code == expect, r.text
        return r.json()

    return offer


class PeerClient:
    def __init__(self, ice_servers: list[dict] | None = None, relay_only: bool = False):
        """``ice_servers``: as GET /webrtc/ice-servers gives them; ``relay_only``: every packet
        through the TURN relay (a browser that reaches nothing else)."""
        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[RTCIceServer(**s) for s in ice_servers or []],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only
            else RTCIceTransportPolicy.ALL))
        self.mic = MicTrack()
        self.got = Received()
        self._tasks: list[asyncio.Task] = []
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("chat", ordered=True)

        @self.channel.on("message")
        def _on_message(message):
            try:
                self.got.messages.append((time.monotonic(), json.loads(message)))
            except ValueError:
                pass

        @self.pc.on("track")
        def _on_track(track):
            if track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(self._record(track)))

    async def _record(self, track) -> None:
        resampler = AudioResampler(format="s16", layout="mono", rate=BOT_RATE)
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended
                return
            for f in resampler.resample(frame):
                self.got.add_audio(f.to_ndarray()[0].copy())

    def offer_body(self) -> dict:
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def make_offer(self) -> dict:
        """The offer with every ICE candidate in it (aiortc gathers in setLocalDescription)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.offer_body()

    async def join(self, post_offer: Offer, offer: dict | None = None,
                   timeout: float = 15, diagnose: Callable[[], str] = lambda: "") -> None:
        """Offer (``offer``: the one make_offer gave, looked at or rewritten; else a fresh one),
        take the bot's answer, and wait until connected (else fail with ``diagnose()``)."""
        answer = await post_offer(offer or await self.make_offer())
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        assert await wait_until(lambda: self.pc.connectionState == "connected", timeout), \
            (self.pc.connectionState, diagnose())

    async def speak(self, audio: np.ndarray, *, trailing_s: float = 0.0) -> None:
        """float32 16 kHz audio as the microphone, then silence; returns once it has gone out."""
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        pcm = np.concatenate([pcm, np.zeros(int(MIC_RATE * trailing_s), np.int16)])
        await asyncio.sleep(self.mic.push(pcm))

    async def silence(self, seconds: float) -> None:
        await self.speak(np.zeros(int(MIC_RATE * seconds), np.float32))

    def send(self, message: dict) -> None:
        self.channel.send(json.dumps(message))

    def ask_in_text(self, text: str = "What is the capital of France?") -> None:
        """A typed question (RTVI send-text), to be answered aloud."""
        self.send({"id": "1", "label": "rtvi-ai", "type": "send-text",
                   "data": {"content": text,
                            "options": {"run_immediately": True, "audio_response": True}}})

    def spoken_words(self) -> str:
        return " ".join(w for _, m in self.got.of_type("speech.chunk") for w in m["words"])

    async def wait_for(self, predicate, timeout: float) -> bool:
        return await wait_until(predicate, timeout)

    async def leave(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
