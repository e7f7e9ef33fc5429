"""Pipecat TTS service around ``KokoroTTS``: audio, word timestamps and lip-sync messages.

For every chunk Kokoro speaks, ``run_tts`` yields, in this order:
1. an ``OutputTransportMessageFrame`` carrying a ``speech.chunk`` message (stack/protocol.py);
   it travels the output transport's audio queue, so it leaves just before its own audio;
2. the chunk's audio as one ``TTSAudioRawFrame`` (the transport slices and paces it);
and reports the chunk's words with ``add_word_timestamps``, in seconds from the start of the
turn's audio (cumulative over the sentences of a turn), so Pipecat emits ``TTSTextFrame``s as
each word is heard and the context keeps only what was actually said.
On interruption a ``speech.stop`` message goes out at once (urgent) so the mouth closes, and the
interruption lists the replies it ended, so that a word of theirs arriving after it never reaches
the context (``keep_interrupted_words_out``).
The browser picks a voice with the RTVI client message ``set-voice`` (``{"voice": name}``, one of
GET /voices); it applies from the next reply, never in the middle of one.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi import RTVIClientMessageFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.string import SENTENCE_ENDING_PUNCTUATION
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from .. import metrics
from ..engines.tts import ChunkPlan, KokoroTTS, SpeechChunk
from ..lipsync import SAMPLE_RATE
from ..protocol import SET_VOICE, SpeechStopMessage, chunk_message
from .threaded import iterate_in_thread

FIRST_WORDS = 6  # a reply's first words go to Kokoro once there are this many (~30 phonemes)
CLAUSE_MIN_WORDS = 3  # ...or at a clause end after at least this many
LONG_SENTENCE_WORDS = 15  # a sentence still open after this many goes out a clause at a time
_CLAUSE_MARKS = frozenset(",;:—")
INTERRUPTED_REPLIES = "avatar.interrupted_replies"  # InterruptionFrame.metadata: context ids
_RECENT_REPLIES = 8  # a word in flight belongs to the reply playing or the one before it


class ReplyStartAggregator(SimpleTextAggregator):
    """Sentences, as Pipecat aggregates them, with two exceptions that keep a reply's voice from
    waiting on the LLM:
    - its first words go to synthesis at the first clause end (or after ``FIRST_WORDS`` words)
      instead of waiting for the LLM to finish the sentence; Kokoro's first chunk is no longer
      than that anyway (``stack.engines.tts.ChunkPlan``);
    - a sentence still open after ``LONG_SENTENCE_WORDS`` words goes at its last clause end (or
      whole, without one): the audio made so far may be a single clause, and waiting for a long
      sentence's end left the voice silent for as long as the LLM took to write it (the test
      model once went on "better, better, ..." to its token limit: 4 s of silence after the
      first 1.2 s).
    A reply starts after a flush (the LLM's response ended) or an interruption."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._reply_started = False

    async def aggregate(self, text: str):
        async for aggregation in super().aggregate(text):
            self._reply_started = True
            yield aggregation
        early = self._early_words()
        if early is not None:
            self._reply_started = True
            yield early

    def _early_words(self) -> Aggregation | None:
        buffered = self._text
        # Never across a possible sentence end: the sentence rules (and their look-ahead) own
        # any text with one.
        if any(c in SENTENCE_ENDING_PUNCTUATION for c in buffered):
            return None
        matches = list(re.finditer(r"\S+", buffered))
        words = [m.group() for m in matches]
        # Whole words only: the last one is whole once a space follows it or a clause mark ends
        # it (after a letter: "3," may go on as "3,000").
        last = words[-1] if words else ""
        if not buffered[-1:].isspace() and not (
                last[-1:] in _CLAUSE_MARKS and last[-2:-1].isalpha()):
            words = words[:-1]
        clauses = [i + 1 for i, w in enumerate(words)
                   if w[-1] in _CLAUSE_MARKS and i + 1 >= CLAUSE_MIN_WORDS]
        if not self._reply_started:  # the first clause, or the first few words
            if not clauses and len(words) < FIRST_WORDS:
                return None
            cut = clauses[0] if clauses else FIRST_WORDS
        elif len(words) >= LONG_SENTENCE_WORDS:  # a long sentence: up to its last clause end
            cut = clauses[-1] if clauses else len(words)
        else:
            return None
        self._text = buffered[matches[cut - 1].end():].lstrip()
        return Aggregation(text=" ".join(words[:cut]), type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        self._reply_started = False
        return await super().flush()

    async def handle_interruption(self):
        self._reply_started = False
        await super().handle_interruption()

    async def reset(self):
        self._reply_started = False
        await super().reset()


@dataclass
class _Turn:
    plan: ChunkPlan  # chunk sizes over the turn's sentences
    voice: str  # the voice chosen when the turn began: all its sentences keep it
    offset_samples: int = 0  # where the next chunk starts in the turn's audio
    seq: int = 0
    started: float | None = None  # loop time the turn's first audio was handed on
    stall_s: float = 0.0  # playback gaps so far: synthesis that fell behind real time


class LocalKokoroTTSService(TTSService):
    """``plan`` makes each answer's chunk plan and ``early_start`` lets its first words go before
    its first sentence is complete: both the product's by default; the benchmark's baseline
    passes the earlier rules (scripts/bench_livekit.py)."""

    def __init__(self, engine: KokoroTTS, *, voice: str | None = None, speed: float = 1.0,
                 plan: Callable[[], ChunkPlan] = ChunkPlan, early_start: bool = True, **kwargs):
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
        if early_start:  # Pipecat 1.x takes no aggregator argument: its own is replaced
            self._text_aggregator = ReplyStartAggregator(
                aggregation_type=self._text_aggregation_mode,
                language=self.text_aggregation_language)
        self._plan = plan
        self._engine = engine
        self._speed = speed
        self.gaps_s: deque[float] = deque(maxlen=100)  # per answer: voice stopped, waiting
        self._turns: dict[str, _Turn] = {}
        self._replies: deque[str] = deque(maxlen=_RECENT_REPLIES)  # latest contexts begun
        self._audible_turn: str | None = None  # announced to the browser, maybe still playing

    def can_generate_metrics(self) -> bool:
        return True

    def _chunks(self, text: str, voice: str, plan: ChunkPlan) -> AsyncIterator[SpeechChunk]:
        """Kokoro's chunks as they are made, from a worker thread. Interrupted, it never waits
        for the chunk being synthesized (that would hold the interruption back)."""
        return iterate_in_thread(lambda stop: self._engine.synthesize(
            text, voice=voice, speed=self._speed, plan=plan, cancel=stop))

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        turn = self._turns.get(context_id)
        if turn is None:
            voice = self._settings.voice if isinstance(self._settings.voice, str) else None
            turn = self._turns[context_id] = _Turn(self._plan(),
                                                   voice or self._engine.default_voice)
            self._replies.append(context_id)
        try:
            await self.start_tts_usage_metrics(text)
            async for chunk in self._chunks(text, turn.voice, turn.plan):
                await self.stop_ttfb_metrics()
                samples = len(chunk.audio)
                offset_s = turn.offset_samples / SAMPLE_RATE
                message = chunk_message(chunk.timing, chunk.audio, turn_id=context_id, seq=turn.seq,
                                        text=chunk.text, offset_ms=offset_s * 1000,
                                        voice=turn.voice)
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
        if isinstance(frame, InterruptionFrame):
            # every reply begun so far is over, spoken or cut off (keep_interrupted_words_out)
            frame.metadata[INTERRUPTED_REPLIES] = frozenset(self._replies)
        if isinstance(frame, InterruptionFrame) and self._audible_turn:
            # Tell the browser first: its mouth must close with the audio, not after.
            stop = SpeechStopMessage(turn_id=self._audible_turn, reason="interrupted")
            self._audible_turn = None
            await self.push_frame(
                OutputTransportMessageUrgentFrame(message=stop.model_dump(mode="json")))
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._audible_turn = None
        elif isinstance(frame, RTVIClientMessageFrame) and frame.type == SET_VOICE:
            await self._set_voice(frame.data)
        await super().process_frame(frame, direction)

    async def _set_voice(self, data) -> None:
        voice = data.get("voice") if isinstance(data, dict) else None
        voices = self._engine.voices.names()
        if voice not in voices:
            await self.push_error(f"unknown voice {voice!r}: choose one of {', '.join(voices)}")
            return
        self._settings.voice = voice  # the next turn takes it (_Turn.voice)

    async def on_audio_context_interrupted(self, context_id: str):
        await super().on_audio_context_interrupted(context_id)
        self._turns.pop(context_id, None)

    async def on_audio_context_completed(self, context_id: str):
        await super().on_audio_context_completed(context_id)
        turn = self._turns.pop(context_id, None)
        if turn is not None and turn.seq:
            self.gaps_s.append(turn.stall_s)
            metrics.TTS_GAPS.observe(turn.stall_s)


def keep_interrupted_words_out(assistant_aggregator: FrameProcessor) -> None:
    """Words of a reply an interruption ended stay out of the context when they reach the
    assistant aggregator after that interruption. The output transport's clock pushes each word
    as its audio plays; one pushed just as the interruption arrives lands in the aggregator's
    queue beside it, and the interruption, a system frame, is taken out first: it closes the
    interrupted reply's message, and the word then started the next reply's ("Meanwhile The
    capital of France is Paris."). The interruption carries the replies it ended (set by
    ``LocalKokoroTTSService``, which it passes first); a word of theirs that the aggregator takes
    after it is not added."""
    ended: frozenset[str] = frozenset()

    async def before_process(_aggregator, frame: Frame):
        nonlocal ended
        if isinstance(frame, InterruptionFrame):
            ended = frame.metadata.get(INTERRUPTED_REPLIES, frozenset())
        elif (isinstance(frame, TTSTextFrame) and frame.context_id in ended
              and frame.interruptible):  # uninterruptible speech goes on, and into the context
            frame.append_to_context = False

    assistant_aggregator.add_event_handler("on_before_process_frame", before_process)
