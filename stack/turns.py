"""When a user turn ends, when a transcript may start one: rules for a speech-to-text that is
slower than the person speaking.

Pipecat's defaults assume a streaming STT that finishes about a second after the speech. Our
Whisper transcribes each VAD segment after it ends, one at a time, and on a busy CPU that takes
seconds. With the defaults a turn then ends on the first segment's transcript (the others still
queued), or on the 5 s stop timeout with no transcript at all, and each late transcript starts a
*new* turn that cuts off the reply the bot just began for that very speech. Two rules instead:

1. A user turn ends only once every segment the person spoke is transcribed: the STT service
   marks each segment in the frame stream, right behind its transcript
   (``SegmentTranscribedFrame``), and ``TranscribedTurnStopStrategy`` holds a stop until the
   marks have caught up with the VAD's stops. Its stop timeout (a turn that smart-turn never
   closes) counts from the last transcription, not from the end of speech, so it follows the
   STT's real speed. Pipecat's own timeout is kept only as a cap for an STT that hangs.
2. A transcript of speech that ended before a reply to it began never starts a turn, so it
   cannot interrupt that reply (``FreshTranscriptionTurnStartStrategy``). Its text stays in the
   user aggregator and goes with the person's next turn.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pipecat.frames.frames import (
    DataFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

# A turn whose end smart-turn never confirms ends this long after the person fell silent and
# the last of their speech was transcribed (Pipecat's default, counted from the transcript).
TURN_STOP_TIMEOUT_S = 5.0
# Pipecat's own watchdog: only for an STT that never answers (four conversations on two cores
# have taken 29 s for one segment).
STT_HANG_TIMEOUT_S = 60.0


@dataclass
class SegmentTranscribedFrame(DataFrame):
    """Segment number ``segment`` (counted from 1 per conversation) of the user's speech has been
    transcribed, with or without text. Pushed after that segment's ``TranscriptionFrame``, in
    the same ordered stream, so whoever sees it has seen the transcript."""

    segment: int


@dataclass
class SegmentTranscriptionFrame(TranscriptionFrame):
    """A ``TranscriptionFrame`` that knows when its speech ended (time.monotonic())."""

    speech_ended_at: float = 0.0


class TranscribedTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart-turn decides that the person has finished; the turn then ends once all their
    speech is transcribed (rule 1 above)."""

    def __init__(self, *, timeout_s: float = TURN_STOP_TIMEOUT_S, **kwargs):
        if "turn_analyzer" not in kwargs:
            from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

            kwargs["turn_analyzer"] = LocalSmartTurnAnalyzerV3()
        super().__init__(**kwargs)
        self._timeout_s = timeout_s
        self._vad_stops = 0  # segments the VAD closed
        self._transcribed = 0  # the highest segment number transcribed
        self._stop_held = False  # a stop came while transcripts were outstanding
        self._in_turn = False
        self._speaking = False
        self._silence_timer: asyncio.Task | None = None

    @property
    def transcripts_outstanding(self) -> int:
        return max(0, self._vad_stops - self._transcribed)

    async def handle_user_turn_started(self):
        await super().handle_user_turn_started()
        self._in_turn, self._stop_held = True, False

    async def handle_user_turn_stopped(self):
        await super().handle_user_turn_stopped()
        self._in_turn, self._stop_held = False, False
        await self._cancel_silence_timer()

    async def cleanup(self):
        await self._cancel_silence_timer()
        await super().cleanup()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        # Counted before the base class reacts to the frame, so a stop it decides on sees them.
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_stops += 1
            self._speaking = False
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking, self._stop_held = True, False  # the turn goes on: decide again later
            await self._cancel_silence_timer()
        elif isinstance(frame, SegmentTranscribedFrame):
            self._transcribed = max(self._transcribed, frame.segment)
        result = await super().process_frame(frame)
        if isinstance(frame, SegmentTranscribedFrame) and self._stop_held \
                and not self.transcripts_outstanding:
            self._stop_held = False
            await super().trigger_user_turn_stopped()
        if isinstance(frame, (VADUserStoppedSpeakingFrame, SegmentTranscribedFrame)):
            await self._restart_silence_timer()
        return result

    async def trigger_user_turn_stopped(self):
        if self.transcripts_outstanding:
            self._stop_held = True  # released by the last outstanding segment's mark
            return
        await super().trigger_user_turn_stopped()

    async def _restart_silence_timer(self):
        await self._cancel_silence_timer()
        if self._in_turn and not self._speaking and not self.transcripts_outstanding:
            self._silence_timer = self.task_manager.create_task(
                self._stop_after_silence(), f"{self}::silence")

    async def _cancel_silence_timer(self):
        if self._silence_timer is not None:
            timer, self._silence_timer = self._silence_timer, None
            if timer is not asyncio.current_task():
                await self.task_manager.cancel_task(timer)

    async def _stop_after_silence(self):
        await asyncio.sleep(self._timeout_s)
        if self._in_turn and not self._speaking and not self.transcripts_outstanding:
            await super().trigger_user_turn_stopped()


class FreshTranscriptionTurnStartStrategy(TranscriptionUserTurnStartStrategy):
    """Pipecat's fallback that starts a turn on a transcript (speech the VAD missed), except for
    a transcript of speech that ended before the last turn with words ended: the bot's reply to
    that turn began after it, so it must not interrupt that reply (rule 2 above)."""

    def __init__(self, **kwargs):
        super().__init__(use_interim=False, **kwargs)
        self._answered_until = float("-inf")  # speech up to here has a reply under way
        self._turn_has_words = False

    async def handle_user_turn_started(self):
        await super().handle_user_turn_started()
        self._turn_has_words = False

    async def handle_user_turn_stopped(self):
        await super().handle_user_turn_stopped()
        if self._turn_has_words:  # the LLM runs on it: its reply begins now
            self._answered_until = time.monotonic()
        self._turn_has_words = False

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        words = isinstance(frame, TranscriptionFrame) and bool(frame.text.strip())
        if words and getattr(frame, "speech_ended_at", float("inf")) <= self._answered_until:
            return ProcessFrameResult.CONTINUE  # late: joins the person's next turn
        result = await super().process_frame(frame)  # may start the turn these words are in
        self._turn_has_words = self._turn_has_words or words
        return result


def user_turn_strategies(*, timeout_s: float = TURN_STOP_TIMEOUT_S) -> UserTurnStrategies:
    """VAD or a fresh transcript starts a turn; smart-turn plus complete transcripts end it."""
    return UserTurnStrategies(
        start=[VADUserTurnStartStrategy(), FreshTranscriptionTurnStartStrategy()],
        stop=[TranscribedTurnStopStrategy(timeout_s=timeout_s)],
    )
