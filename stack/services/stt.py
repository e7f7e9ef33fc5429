"""Pipecat STT service around ``WhisperSTT``: transcribes each VAD-cut user utterance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from ..engines.stt import SAMPLE_RATE, WhisperSTT


class LocalWhisperSTTService(SegmentedSTTService):
    def __init__(self, engine: WhisperSTT, **kwargs):
        # ttfs: end of speech -> final transcript, p99; Whisper on a short utterance, CPU worst case.
        kwargs.setdefault("ttfs_p99_latency", 1.0)
        super().__init__(sample_rate=SAMPLE_RATE,
                         settings=STTSettings(model=None, language=engine.language), **kwargs)
        self._engine = engine

    @property
    def wants_wav_segments(self) -> bool:
        return False  # the engine reads raw 16-bit PCM

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        pcm = np.frombuffer(audio, dtype=np.int16)
        try:
            # Off the event loop: audio keeps flowing while Whisper runs.
            transcript = await asyncio.to_thread(self._engine.transcribe, pcm)
        except Exception as e:  # a failed utterance must not take the session down
            yield ErrorFrame(error=f"speech-to-text failed: {e}")
            return
        finally:
            await self.stop_processing_metrics()
        if transcript.text:
            yield TranscriptionFrame(transcript.text, self._user_id, time_now_iso8601(),
                                     result=transcript)
