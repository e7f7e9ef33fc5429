"""The bot's two transports, each with the lip-sync anchor.

Pipecat sends a ``speech.chunk`` message just before the chunk's first audio frame enters the
transport's outgoing audio queue. That queue still holds some earlier audio, so the chunk's first
sample goes out on the WebRTC track that much later. We stamp it on the message as ``lead_ms`` at
the moment of sending: the browser schedules the chunk at ``arrival + lead_ms + its own
receive/playout delay`` (docs/protocol.md).

- LiveKit (``TRANSPORT=livekit``, the default): the queue is LiveKit's ``AudioSource``.
- SmallWebRTC (``TRANSPORT=smallwebrtc``): Pipecat's peer-to-peer transport on aiortc, no media
  server. Its queue is the outgoing track's list of 10 ms pieces; the data channel carries the
  same messages (RTVI and ours) as LiveKit's data packets. Pipecat hands the track one frame at a
  time and waits until aiortc has taken it, so that queue is empty whenever a chunk's message is
  stamped: every chunk goes with ``lead_ms`` 0, and the page places each one by its receive delay
  until the chunk's own onset is heard.

A browser's offer whose own addresses are hidden behind mDNS names is taken as one still
gathering (``awaiting_hidden_hosts``), so the bot learns those addresses from the browser's checks.

The person's audio comes from LiveKit already at the pipeline's rate, in frames of one VAD window
(``MicLiveKitClient``): LiveKit resamples in its native code, so the VAD hears each window as
soon as it is complete, and the event loop handles 31 frames a second instead of 100.

At a barge-in the stop message says how far the turn's audio had gone out (``sent_ms``): what
was sent before it is still heard, and the mouth goes on until there (``SentPosition``). Audio,
words and ``speech.chunk`` messages made before the interruption never go out after it, even
those it overtook in the transport's own queue (``_Anchored.process_frame``).
"""

from __future__ import annotations

import re

from livekit import rtc
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.livekit.transport import (
    LiveKitOutputTransport,
    LiveKitTransport,
    LiveKitTransportClient,
)
from pipecat.transports.smallwebrtc.transport import (
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)

MessageFrame = OutputTransportMessageFrame | OutputTransportMessageUrgentFrame

MIC_SAMPLE_RATE = 16000  # what Silero VAD, smart-turn and Whisper take
MIC_FRAME_MS = 32  # one Silero VAD window (512 samples at 16 kHz): it decides on each frame


def _message_type(frame: MessageFrame) -> str | None:
    """The ``type`` of one of our messages (stack/protocol.py); None for any other."""
    return frame.message.get("type") if isinstance(frame.message, dict) else None


class SentPosition:
    """Where the turn being sent stands in its own audio: its last ``speech.chunk``'s offset plus
    the audio written since, less what the outgoing queue still holds (audio an interruption
    drops, or that leaves later). Stamps ``lead_ms`` on chunks and ``sent_ms`` on stops."""

    def __init__(self) -> None:
        self.turn_id: str | None = None
        self.offset_ms = 0.0
        self.written_s = 0.0

    def wrote(self, frame: OutputAudioRawFrame) -> None:
        self.written_s += len(frame.audio) / (2 * frame.num_channels * frame.sample_rate)

    def stamp(self, frame: MessageFrame, queued_s: float) -> None:
        message = frame.message
        kind = _message_type(frame)
        if kind == "speech.chunk":
            # it goes out just before its first audio frame is written
            frame.message = {**message, "lead_ms": round(queued_s * 1000, 1)}
            self.turn_id, self.offset_ms, self.written_s = (message["turn_id"],
                                                            message["offset_ms"], 0.0)
        elif kind == "speech.stop" and message.get("turn_id") == self.turn_id:
            sent_ms = self.offset_ms + (self.written_s - queued_s) * 1000
            frame.message = {**message, "sent_ms": round(max(0.0, sent_ms), 1)}
            self.turn_id = None


def _speech(frame: Frame) -> bool:
    """What a person hears or sees of a reply: its audio, its words, its timing messages."""
    if isinstance(frame, (OutputAudioRawFrame, TTSTextFrame)):
        return True
    return isinstance(frame, OutputTransportMessageFrame) and _message_type(frame) == "speech.chunk"


class _Anchored:
    """An output transport that stamps our messages from its ``SentPosition``; each transport
    says how much audio its outgoing queue holds (``_queued_s``).

    It also drops the speech an interruption was meant to stop but overtook: a processor's input
    queue hands system frames out before data frames, so a reply's chunk pushed here a moment
    before the interruption (a Kokoro chunk done ~20 ms before a barge-in, on a loaded CPU) was
    taken after it, past the queue clearing, and played out whole. Frame ids count up across the
    process, so whatever speech has a lower id than the latest interruption was made before it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sent = SentPosition()
        self._interrupted_at = -1  # id of the latest interruption seen here

    def _queued_s(self) -> float:
        raise NotImplementedError

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InterruptionFrame):
            self._interrupted_at = max(self._interrupted_at, frame.id)
        elif (direction == FrameDirection.DOWNSTREAM and frame.id < self._interrupted_at
              and frame.interruptible and _speech(frame)):
            return
        await super().process_frame(frame, direction)  # type: ignore[misc]

    async def send_message(self, frame: MessageFrame):
        self._sent.stamp(frame, self._queued_s())
        await super().send_message(frame)  # type: ignore[misc]

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        written = await super().write_audio_frame(frame)  # type: ignore[misc]
        if written:
            self._sent.wrote(frame)
        return written


class AnchoredLiveKitOutputTransport(_Anchored, LiveKitOutputTransport):
    def _queued_s(self) -> float:
        source = self._client._audio_source
        return source.queued_duration if source is not None else 0.0


class MicLiveKitClient(LiveKitTransportClient):
    """Pipecat's LiveKit client with each person's audio stream opened at ``MIC_SAMPLE_RATE``
    in ``MIC_FRAME_MS`` frames. Pipecat opens it at LiveKit's 48 kHz in 10 ms frames and
    resamples them on the event loop with soxr's streaming VHQ filter, which hands its output
    on in bursts of 1100 samples every 7th frame: the VAD heard each sample 9-86 ms late. Its
    input transport leaves audio already at the pipeline's rate as it is."""

    async def _process_audio_stream(self, audio_stream: rtc.AudioStream, participant_id: str):
        entry = self._audio_streams.get(participant_id)
        track = self._audio_tracks.get(participant_id)
        if entry is not None and entry[0] is audio_stream and track is not None:
            own = rtc.AudioStream(track, sample_rate=MIC_SAMPLE_RATE, num_channels=1,
                                  frame_size_ms=MIC_FRAME_MS)
            self._audio_streams[participant_id] = (own, entry[1])  # closed by Pipecat's own path
            await audio_stream.aclose()
            audio_stream = own
        await super()._process_audio_stream(audio_stream, participant_id)


class AvatarLiveKitTransport(LiveKitTransport):
    def __init__(self, url: str, token: str, room_name: str, **kwargs):
        super().__init__(url, token, room_name, **kwargs)
        pipecats = self._client  # nothing holds it yet: input() and output() are made later
        self._client = MicLiveKitClient(url, token, room_name, self._params,
                                        pipecats._callbacks, self.name)

    def output(self) -> LiveKitOutputTransport:
        if not self._output:
            self._output = AnchoredLiveKitOutputTransport(self, self._client, self._params,
                                                          name=self._output_name)
        return self._output


PIECE_S = 0.01  # Pipecat's RawAudioTrack hands aiortc 10 ms at a time


class AnchoredSmallWebRTCOutputTransport(_Anchored, SmallWebRTCOutputTransport):
    def _queued_s(self) -> float:
        track = self._client._audio_output_track
        return (len(track._chunk_queue) if track is not None else 0) * PIECE_S


class AvatarSmallWebRTCTransport(SmallWebRTCTransport):
    def output(self) -> SmallWebRTCOutputTransport:
        if not self._output:
            self._output = AnchoredSmallWebRTCOutputTransport(self._client, self._params,
                                                              name=self._output_name)
        return self._output


_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ [0-9a-fA-F-]+\.local ", re.M)
_END_OF_CANDIDATES = re.compile(r"^a=end-of-candidates\r?\n", re.M)


def awaiting_hidden_hosts(sdp: str) -> str:
    """A browser that has not been given the microphone yet (the page sends its offer first)
    hides its own addresses behind mDNS names (``<uuid>.local``), which the bot resolves only on
    the same link. With ``a=end-of-candidates`` in the offer as well (Firefox), aiortc's ICE gives
    up at once with nothing to check; without it, it waits for the browser's checks and learns
    the address they come from (a peer-reflexive candidate). A browser that never connects is
    ended by the session's join timeout."""
    return _END_OF_CANDIDATES.sub("", sdp) if _MDNS_CANDIDATE.search(sdp) else sdp
