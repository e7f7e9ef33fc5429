"""Pipecat LLM service around ``LlamaLLM``: streams ``LLMTextFrame``s from an ``LLMContext``.

On interruption Pipecat cancels the task processing the context frame; the ``finally`` below
then tells llama.cpp to stop before its next token, so the engine is free for the next turn.

A generation that fails or says nothing is never silent: the person hears ``APOLOGY`` and the
page gets an RTVI error message (from the ``ErrorFrame``) saying what happened. One that falls
into a loop (the same words again and again) is cut short (``repeating_tail``), and the words
that may start one are held back until it is clear (``speakable``): a loop's repeats are not
spoken. Both rules come from one look at the reply's end per token (``ReplyText``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from pipecat.adapters.llm.services.open_ai_adapter import OpenAILLMAdapter
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.errors import ErrorCategory

from .. import metrics
from ..engines.llm import LlamaLLM
from .threaded import iterate_in_thread

log = logging.getLogger(__name__)

APOLOGY = "Sorry, I lost my train of thought. Could you say that again?"
EMPTY_REPLY = "The language model returned no answer"
LOOP_WORDS = 8  # a loop says at least this many words: not emphasis ("no, no, no, no")
LOOP_PERIOD_MAX = 60  # the longest repeated stretch looked for, in words (a long sentence)
HOLD_WORDS = 2  # a stretch said again for this many words (a single word: once) is held back
_WORD = re.compile(r"[\w']+")


def _loop_repeats(period: int) -> int:
    """How many times in a row a stretch of ``period`` words makes a loop: a word or two four
    times (and LOOP_WORDS in all), a short phrase three times, a sentence of 8 words twice (no
    one says that again word for word at once)."""
    return 4 if period <= 2 else 3 if period < LOOP_WORDS else 2


def _runs(words: list[str]):
    """For each stretch length ``period`` (up to LOOP_PERIOD_MAX words), how many of the last
    words each say again the word ``period`` before them: ``(period, same)``, shortest first."""
    n = len(words)
    for period in range(1, min(LOOP_PERIOD_MAX, n - 1) + 1):
        same = 0
        while same < n - period and words[n - 1 - same] == words[n - 1 - same - period]:
            same += 1
        yield period, same


def _tail(text: str) -> tuple[str | None, int | None]:
    """One look at a reply's end, for both rules: the words it keeps saying when they make a
    loop (``repeating_tail``), and where the words that may start one begin (``speakable``)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    words = [text[a:b].lower() for a, b in spans]
    loop, held = None, 0
    for period, same in _runs(words):
        times = 1 + same // period  # copies of the last ``period`` words, in a row
        if loop is None and times >= _loop_repeats(period) and times * period >= LOOP_WORDS:
            loop = " ".join(words[len(words) - period:])
        if same >= min(period, HOLD_WORDS):
            held = max(held, same)
    return loop, spans[len(spans) - held][0] if held else None


def repeating_tail(text: str) -> str | None:
    """The words a reply keeps saying at its end when they make a loop (``_loop_repeats``):
    "better" in "fail better, better, better, ...", or a whole sentence said again; else None.
    A small model at temperature 0 can fall into one and speak it until its token limit:
    the test model once spoke "better" for 56 s, and told one 25-word sentence of a story four
    times over."""
    return _tail(text)[0]


def speakable(text: str) -> int:
    """How much of a reply so far can go on to be spoken: not the end that says again the words
    just before it (a stretch of up to LOOP_PERIOD_MAX words, again for HOLD_WORDS words or
    more; a single word once), which may be a loop starting. Held words go on as soon as they
    turn out otherwise; a loop's never do. Everything else goes on at once: Pipecat's sentence
    aggregator decides a sentence has ended on the first letter after its mark, and holding that
    back a token delayed every sentence's synthesis by one."""
    held = _tail(text)[1]
    return len(text) if held is None else held


class ReplyText:
    """A reply's text as the LLM streams it, and how much of it may go on to be spoken so far
    (``speakable``); ``loop``: the words it kept repeating once it fell into a loop
    (``repeating_tail``), after which nothing more of it goes on."""

    def __init__(self):
        self.said, self.spoken, self.loop = "", 0, None

    def add(self, piece: str) -> str:
        """Takes the next piece; returns what goes on to be spoken now ("" for nothing)."""
        self.said += piece
        self.loop, held = _tail(self.said)  # both rules from one look at the reply's end
        if self.loop is not None:
            return ""
        return self._release(len(self.said) if held is None else held)

    def end(self) -> str:
        """The reply is over: what was held back goes on, unless it was a loop's."""
        return "" if self.loop is not None else self._release(len(self.said))

    def _release(self, until: int) -> str:
        out = self.said[self.spoken:until] if until > self.spoken else ""
        self.spoken = max(self.spoken, until)
        return out


def _text_messages(messages: list[dict]) -> list[dict]:
    """OpenAI messages with list contents flattened to text (llama.cpp templates want strings)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if m.get("role") in ("system", "user", "assistant") and content:
            out.append({"role": m["role"], "content": content})
    return out


class LocalLlamaLLMService(LLMService[OpenAILLMAdapter]):
    adapter_class = OpenAILLMAdapter

    def __init__(self, engine: LlamaLLM, *, system_instruction: str | None = None,
                 max_tokens: int = 256, temperature: float = 0.7, repeat_penalty: float = 1.0,
                 **kwargs):
        settings = LLMSettings(
            model=None, system_instruction=system_instruction, temperature=temperature,
            max_tokens=max_tokens, top_p=None, top_k=None, frequency_penalty=None,
            presence_penalty=None, seed=None, filter_incomplete_user_turns=False,
            user_turn_completion_config=None, use_provider_thinking_default=False,
        )
        super().__init__(settings=settings, **kwargs)
        self._engine = engine
        self._repeat_penalty = repeat_penalty
        self._keep_from = 0  # where this conversation's history is cut for the window
        self._session = object()  # names this conversation to the engine (its cached tokens)

    def can_generate_metrics(self) -> bool:
        return True

    async def _messages(self, context: LLMContext) -> list[dict]:
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context, system_instruction=self._settings.system_instruction,
            convert_developer_to_user=True)
        return _text_messages(list(params["messages"]))

    def _stream(self, messages: list[dict]):
        """llama.cpp's token stream, from a worker thread; stops before the next token when the
        consumer is cancelled (barge-in). The conversation is fitted to the window there too,
        keeping this conversation's cut where it was while it fits (a stable prompt prefix)."""
        def generate(stop):
            fitted, self._keep_from = self._engine.fit(
                messages, self._settings.max_tokens, keep_from=self._keep_from)
            return self._engine.stream(
                fitted, max_tokens=self._settings.max_tokens,
                temperature=self._settings.temperature, repeat_penalty=self._repeat_penalty,
                cancel=stop, session=self._session)

        return iterate_in_thread(generate)

    async def cleanup(self):
        await super().cleanup()
        self._engine.release(self._session)  # its sequence goes to the next conversation

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        reply = ReplyText()
        failure: str | None = None
        try:
            stream = self._stream(await self._messages(frame.context))
            async with contextlib.aclosing(stream):  # a loop cut short stops the engine too
                async for piece in stream:
                    await self.stop_ttfb_metrics()
                    if text := reply.add(piece):
                        await self._push_llm_text(text)
                    if reply.loop is not None:
                        # what was held back of it is never spoken (nor recorded as said)
                        log.warning("LLM answer cut short: it kept repeating %r", reply.loop)
                        metrics.LLM_LOOPS.inc()
                        break
        except asyncio.CancelledError:
            # Barge-in: no end-of-response frame, or the TTS would flush and speak (and the
            # context record) the half sentence still in its aggregator.
            await self.stop_processing_metrics()
            raise
        except Exception as e:
            failure = f"LLM generation failed: {e}"
        if text := reply.end():
            await self._push_llm_text(text)  # nothing more to wait for
        if failure is None and not reply.said.strip():
            failure = EMPTY_REPLY
        if failure is not None:
            await self.push_error(error_msg=failure, category=ErrorCategory.SERVER)
            await self._push_llm_text(APOLOGY)
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())

    async def run_inference(self, context: LLMContext, max_tokens: int | None = None,
                            system_instruction: str | None = None,
                            response_schema=None) -> str | None:
        messages = await self._messages(context)
        if system_instruction:
            messages = [{"role": "system", "content": system_instruction},
                        *[m for m in messages if m["role"] != "system"]]
        pieces = []
        async for piece in self._stream(messages):
            pieces.append(piece)
        return "".join(pieces)
