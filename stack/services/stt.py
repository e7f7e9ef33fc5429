"""Pipecat STT service around ``WhisperSTT``: transcribes each VAD-cut user utterance.

Each segment's transcript (if any) is followed by a ``SegmentTranscribedFrame``, so the turn
strategies (stack/turns.py) know when all of the person's speech has been transcribed."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from ..engines.stt import SAMPLE_RATE, WhisperSTT
from ..turns import SegmentTranscribedFrame, SegmentTranscriptionFrame
from .threaded import call_in_thread


class LocalWhisperSTTService(SegmentedSTTService):
    def __init__(self, engine: WhisperSTT, **kwargs):
        # ttfs: end of speech -> final transcript, p99; Whisper on a short utterance, CPU worst
        # case.
        kwargs.setdefault("ttfs_p99_latency", 1.0)
        super().__init__(sample_rate=SAMPLE_RATE,
                         settings=STTSettings(model=None, language=engine.language), **kwargs)
        self._engine = engine
        self._speech_ends: deque[float] = deque()  # segments queued for run_stt, in order
        self._segments = 0  # segments transcribed so far

    @property
    def wants_wav_segments(self) -> bool:
        return False  # the engine reads raw 16-bit PCM

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            if self.is_usable:  # the base class queues the segment for run_stt
                self._speech_ends.append(time.monotonic())
            else:  # it drops the segment: mark it done, or the turn would wait for it
                self._segments += 1
                await self.push_frame(SegmentTranscribedFrame(self._segments))
        await super().process_frame(frame, direction)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        ended = self._speech_ends.popleft() if self._speech_ends else time.monotonic()
        await self.start_processing_metrics()
        pcm = np.frombuffer(audio, dtype=np.int16)
        try:
            # Off the event loop: audio keeps flowing while Whisper runs. No word timestamps:
            # nothing downstream reads the person's word times, and they cost an extra pass.
            transcript = await call_in_thread(self._engine.transcribe, pcm,
                                              word_timestamps=False)
        except Exception as e:  # a failed utterance must not take the session down
            transcript = None
            yield ErrorFrame(error=f"speech-to-text failed: {e}")
        finally:
            await self.stop_processing_metrics()
        if transcript is not None and transcript.text:
            yield SegmentTranscriptionFrame(transcript.text, self._user_id, time_now_iso8601(),
                                            result=transcript, speech_ended_at=ended)
        self._segments += 1
        yield SegmentTranscribedFrame(self._segments)
