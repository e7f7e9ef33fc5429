"""A Python LiveKit participant standing in for the browser: publishes a WAV as its microphone,
records the bot's audio and data messages with their arrival times."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

MIC_RATE = 16_000
BOT_RATE = 24_000
FRAME_MS = 10


VOICED = 300  # an int16 frame louder than this at its peak is the bot's voice, not silence


@dataclass
class Received:
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, int16 frame)
    messages: list[tuple[float, dict]] = field(default_factory=list)
    # the frames of ``audio`` louder than VOICED, kept as they come: callers poll ``voiced()``
    # every 50 ms, and scanning every frame received so far each time cost the benchmark's
    # clients a sizeable share of the CPU the bot needs (4 clients, a minute of audio each)
    _voiced: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def add_audio(self, frame: np.ndarray) -> None:
        """A frame (int16) of the bot's audio, arrived now."""
        item = (time.monotonic(), frame)
        self.audio.append(item)
        if np.abs(frame).max(initial=0) > VOICED:
            self._voiced.append(item)

    def of_type(self, kind: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.messages if m.get("type") == kind]

    def user_transcripts(self) -> list[str]:
        return [m["data"]["text"] for _, m in self.messages
                if m.get("label") == "rtvi-ai" and m.get("type") == "user-transcription"
                and m["data"].get("final")]

    def replied_besides(self, turn_id: str) -> bool:
        """Whether timing messages of another reply than ``turn_id`` came."""
        return self.first_reply_besides(turn_id) is not None

    def first_reply_besides(self, turn_id: str) -> float | None:
        """When the first timing message of another reply than ``turn_id`` came (None: none)."""
        return next((t for t, m in self.of_type("speech.chunk") if m["turn_id"] != turn_id), None)

    def sent_span(self, turn_id: str, before: float) -> tuple[float, float]:
        """Where a turn's audio can have gone out to when a message came at ``before``: from its
        last chunk's offset, less the earlier audio still queued ahead of it then (``lead_ms``),
        to that chunk's end. (Chunks and stops travel one ordered channel.)"""
        last = [m for t, m in self.of_type("speech.chunk") if m["turn_id"] == turn_id
                and t <= before][-1]
        return last["offset_ms"] - last["lead_ms"], last["offset_ms"] + last["duration_ms"]

    def voiced(self) -> list[tuple[float, np.ndarray]]:
        """The frames louder than VOICED, in order of arrival."""
        return list(self._voiced)

    def last_voiced(self) -> float | None:
        """When the latest audible frame arrived (None: none yet)."""
        return self._voiced[-1][0] if self._voiced else None


async def wait_until(predicate, timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


class Client:
    def __init__(self):
        self.room = rtc.Room()
        self.got = Received()
        self.source = rtc.AudioSource(MIC_RATE, 1, queue_size_ms=100)
        self._tasks: list[asyncio.Task] = []
        self._streams: list[rtc.AudioStream] = []
        self._closed = False
        self._muted = False

        @self.room.on("track_subscribed")
        def _on_track(track, publication, participant):
            if track.kind == rtc.TrackKind.KIND_AUDIO and not self._closed:
                self._tasks.append(asyncio.ensure_future(self._record(track)))

        @self.room.on("data_received")
        def _on_data(packet: rtc.DataPacket):
            try:
                self.got.messages.append((time.monotonic(), json.loads(packet.data)))
            except ValueError:
                pass

    async def _record(self, track):
        stream = rtc.AudioStream(track, sample_rate=BOT_RATE, num_channels=1)
        self._streams.append(stream)
        async for event in stream:
            self.got.add_audio(np.frombuffer(event.frame.data, dtype=np.int16).copy())

    async def join(self, url: str, token: str) -> None:
        await self.room.connect(url, token)
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

    async def speak(self, audio: np.ndarray, *, trailing_s: float = 0.0) -> None:
        """Push float32 16 kHz audio in real time (10 ms frames), then silence."""
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        pcm = np.concatenate([pcm, np.zeros(int(MIC_RATE * trailing_s), np.int16)])
        n = MIC_RATE * FRAME_MS // 1000
        for i in range(0, len(pcm) - n + 1, n):
            chunk = np.zeros(n, np.int16) if self._muted else pcm[i:i + n]
            frame = rtc.AudioFrame(chunk.tobytes(), MIC_RATE, 1, n)
            await self.source.capture_frame(frame)

    async def silence(self, seconds: float) -> None:
        await self.speak(np.zeros(int(MIC_RATE * seconds), np.float32))

    async def wait_for(self, predicate, timeout: float) -> bool:
        return await wait_until(predicate, timeout)

    async def leave(self) -> None:
        self._closed = True
        await self.room.disconnect()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:
            await stream.aclose()
