"""Pipecat TTS service around ``KokoroTTS``: audio, word timestamps and lip-sync messages.

For every chunk Kokoro speaks, ``run_tts`` yields, in this order:
1. an ``OutputTransportMessageFrame`` carrying a ``speech.chunk`` message (stack/protocol.py);
   it travels the output transport's audio queue, so it leaves just before its own audio;
2. the chunk's audio as one ``TTSAudioRawFrame`` (the transport slices and paces it);
and reports the chunk's words with ``add_word_timestamps``, in seconds from the start of the
turn's audio (cumulative over the sentences of a turn), so Pipecat emits ``TTSTextFrame``s as
each word is heard and the context keeps only what was actually said.
On interruption a ``speech.stop`` message goes out at once (urgent) so the mouth closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from ..engines.tts import KokoroTTS, SpeechChunk
from ..lipsync import SAMPLE_RATE
from ..protocol import SpeechStopMessage, chunk_message
from .threaded import iterate_in_thread


@dataclass
class _Turn:
    offset_samples: int = 0  # where the next chunk starts in the turn's audio
    seq: int = 0
    started: float | None = None  # loop time the turn's first audio was handed on
    stall_s: float = 0.0  # playback gaps so far: synthesis that fell behind real time


class LocalKokoroTTSService(TTSService):
    def __init__(self, engine: KokoroTTS, *, voice: str | None = None, speed: float = 1.0,
                 **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            push_text_frames=False,  # words come from add_word_timestamps, as they are heard
            # A sentence can take a few seconds to synthesize on a CPU; Pipecat would count a
            # context idle that long as finished and mark its unspoken text as said.
            stop_frame_timeout_s=10.0,
            sample_rate=SAMPLE_RATE,
            settings=TTSSettings(model=None, voice=voice or engine.default_voice, language="en"),
            **kwargs,
        )
        self._engine = engine
        self._speed = speed
        self._turns: dict[str, _Turn] = {}
        self._audible_turn: str | None = None  # announced to the browser, maybe still playing

    def can_generate_metrics(self) -> bool:
        return True

    def _chunks(self, text: str, voice: str, quick_start: bool) -> AsyncIterator[SpeechChunk]:
        """Kokoro's chunks as they are made, from a worker thread. Interrupted, it never waits
        for the chunk being synthesized (that would hold the interruption back)."""
        return iterate_in_thread(lambda stop: self._engine.synthesize(
            text, voice=voice, speed=self._speed, quick_start=quick_start, cancel=stop))

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        turn = self._turns.setdefault(context_id, _Turn())
        voice = self._settings.voice if isinstance(self._settings.voice, str) else None
        try:
            await self.start_tts_usage_metrics(text)
            async for chunk in self._chunks(text, voice or self._engine.default_voice,
                                            quick_start=turn.seq == 0):
                await self.stop_ttfb_metrics()
                samples = len(chunk.audio)
                offset_s = turn.offset_samples / SAMPLE_RATE
                message = chunk_message(chunk.timing, chunk.audio, turn_id=context_id, seq=turn.seq,
                                        text=chunk.text, offset_ms=offset_s * 1000)
                yield OutputTransportMessageFrame(message=message.model_dump(mode="json"))
                self._audible_turn = context_id
                # Word times run on the turn's playback clock. If this chunk comes later than
                # the audio before it ends (a slow CPU), playback pauses for the difference, and
                # so must the words, or the context would count words nobody has heard yet.
                now = asyncio.get_running_loop().time()
                if turn.started is None:
                    turn.started = now
                turn.stall_s = max(turn.stall_s, now - turn.started - offset_s)
                start_s = offset_s + turn.stall_s
                await self.add_word_timestamps(
                    [(w.word, start_s + w.start_ms / 1000) for w in chunk.timing.words], context_id)
                yield TTSAudioRawFrame(chunk.pcm16(), SAMPLE_RATE, 1, context_id=context_id)
                turn.offset_samples += samples
                turn.seq += 1
        except Exception as e:
            yield ErrorFrame(error=f"text-to-speech failed: {e}")
        finally:
            await self.stop_ttfb_metrics()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InterruptionFrame) and self._audible_turn:
            # Tell the browser first: its mouth must close with the audio, not after.
            stop = SpeechStopMessage(turn_id=self._audible_turn, reason="interrupted")
            self._audible_turn = None
            await self.push_frame(
                OutputTransportMessageUrgentFrame(message=stop.model_dump(mode="json")))
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._audible_turn = None
        await super().process_frame(frame, direction)

    async def on_audio_context_interrupted(self, context_id: str):
        await super().on_audio_context_interrupted(context_id)
        self._turns.pop(context_id, None)

    async def on_audio_context_completed(self, context_id: str):
        await super().on_audio_context_completed(context_id)
        self._turns.pop(context_id, None)
