"""LiveKit transport with the lip-sync anchor.

Pipecat sends a ``speech.chunk`` message just before the chunk's first audio frame enters
LiveKit's ``AudioSource``. That source still holds ``queued_duration`` of earlier audio, so the
chunk's first sample goes out on the WebRTC track that much later. We stamp it on the message as
``lead_ms`` at the moment of sending: the browser schedules the chunk at
``arrival + lead_ms + its own receive/playout delay`` (docs/protocol.md).
"""

from __future__ import annotations

from pipecat.frames.frames import OutputTransportMessageFrame, OutputTransportMessageUrgentFrame
from pipecat.transports.livekit.transport import LiveKitOutputTransport, LiveKitTransport


class AnchoredLiveKitOutputTransport(LiveKitOutputTransport):
    async def send_message(self,
                           frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
        message = frame.message
        if isinstance(message, dict) and message.get("type") == "speech.chunk":
            source = self._client._audio_source
            lead_ms = source.queued_duration * 1000 if source is not None else 0.0
            frame.message = {**message, "lead_ms": round(lead_ms, 1)}
        await super().send_message(frame)


class AvatarLiveKitTransport(LiveKitTransport):
    def output(self) -> LiveKitOutputTransport:
        if not self._output:
            self._output = AnchoredLiveKitOutputTransport(self, self._client, self._params,
                                                          name=self._output_name)
        return self._output
