"""The bot's two transports, each with the lip-sync anchor.

Pipecat sends a ``speech.chunk`` message just before the chunk's first audio frame enters the
transport's outgoing audio queue. That queue still holds some earlier audio, so the chunk's first
sample goes out on the WebRTC track that much later. We stamp it on the message as ``lead_ms`` at
the moment of sending: the browser schedules the chunk at ``arrival + lead_ms + its own
receive/playout delay`` (docs/protocol.md).

- LiveKit (``TRANSPORT=livekit``, the default): the queue is LiveKit's ``AudioSource``.
- SmallWebRTC (``TRANSPORT=smallwebrtc``): Pipecat's peer-to-peer transport on aiortc, no media
  server. Its queue is the outgoing track's list of 10 ms pieces; the data channel carries the
  same messages (RTVI and ours) as LiveKit's data packets.
"""

from __future__ import annotations

from pipecat.frames.frames import OutputTransportMessageFrame, OutputTransportMessageUrgentFrame
from pipecat.transports.livekit.transport import LiveKitOutputTransport, LiveKitTransport
from pipecat.transports.smallwebrtc.transport import (
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)

MessageFrame = OutputTransportMessageFrame | OutputTransportMessageUrgentFrame


def with_lead(frame: MessageFrame, queued_s: float) -> None:
    """Stamp a ``speech.chunk`` with the audio queued ahead of it."""
    message = frame.message
    if isinstance(message, dict) and message.get("type") == "speech.chunk":
        frame.message = {**message, "lead_ms": round(queued_s * 1000, 1)}


class AnchoredLiveKitOutputTransport(LiveKitOutputTransport):
    async def send_message(self, frame: MessageFrame):
        source = self._client._audio_source
        with_lead(frame, source.queued_duration if source is not None else 0.0)
        await super().send_message(frame)


class AvatarLiveKitTransport(LiveKitTransport):
    def output(self) -> LiveKitOutputTransport:
        if not self._output:
            self._output = AnchoredLiveKitOutputTransport(self, self._client, self._params,
                                                          name=self._output_name)
        return self._output


PIECE_S = 0.01  # Pipecat's RawAudioTrack hands aiortc 10 ms at a time


class AnchoredSmallWebRTCOutputTransport(SmallWebRTCOutputTransport):
    async def send_message(self, frame: MessageFrame):
        track = self._client._audio_output_track
        pieces = len(track._chunk_queue) if track is not None else 0
        with_lead(frame, pieces * PIECE_S)
        await super().send_message(frame)


class AvatarSmallWebRTCTransport(SmallWebRTCTransport):
    def output(self) -> SmallWebRTCOutputTransport:
        if not self._output:
            self._output = AnchoredSmallWebRTCOutputTransport(self._client, self._params,
                                                              name=self._output_name)
        return self._output
