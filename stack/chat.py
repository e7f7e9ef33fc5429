"""Typed chat: what a person types reaches the pipeline as Pipecat's RTVI ``send-text`` (the RTVI
processor turns it into an ``LLMMessagesAppendFrame`` that runs the LLM, and the bot answers by
voice as usual). The page refuses a message over ``CHAT_MAX_CHARS`` before sending it; this
guard refuses it again for any other client, with a reason the page shows, instead of feeding a
page of text to a small model's context."""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, LLMMessagesAppendFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from .protocol import CHAT_MAX_CHARS


def _too_long(frame: LLMMessagesAppendFrame) -> int | None:
    """The length of the longest user message over the limit, if any."""
    lengths = [len(m["content"].strip()) for m in frame.messages
               if isinstance(m, dict) and m.get("role") == "user"
               and isinstance(m.get("content"), str)]
    longest = max(lengths, default=0)
    return longest if longest > CHAT_MAX_CHARS else None


class TypedTextGuard(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMMessagesAppendFrame) and (length := _too_long(frame)):
            logger.warning(f"typed message of {length} characters refused")
            await self.push_error_frame(ErrorFrame(
                error=f"typed message too long ({length} characters; at most {CHAT_MAX_CHARS})"))
            return
        await self.push_frame(frame, direction)
