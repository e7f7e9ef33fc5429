"""A long conversation through the whole pipeline (user aggregator -> LLM -> TTS -> assistant
aggregator): many turns, far more history than the LLM's context holds. Used by
``scripts/bench.py --long N``: every turn must be answered, and the prompt the LLM is given must
never exceed its budget (LLM_CONTEXT_TOKENS - LLM_MAX_TOKENS)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    LLMMessagesAppendFrame,
    OutputTransportMessageFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from stack.config import Settings  # noqa: E402
from stack.engines.load import load_engines  # noqa: E402
from stack.pipeline import build_pipeline  # noqa: E402

TOPICS = ["the moon", "bicycles", "coffee", "volcanoes", "penguins", "the piano", "bread",
          "lighthouses", "honey bees", "chess", "rainbows", "the Roman empire", "sailing",
          "tea", "glaciers", "owls", "paper", "trains", "tomatoes", "the violin"]


def question(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (f"This is question number {i + 1}. Yesterday I spent the afternoon reading about "
            f"{topic} and I keep thinking about it. Could you tell me one interesting thing "
            f"about {topic}, in a sentence or two, as if we were chatting over lunch?")


class _Replies(FrameProcessor):
    """At the end of the pipeline: the words of each reply, and when it is finished."""

    def __init__(self):
        super().__init__()
        self.words: list[str] = []
        self.done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputTransportMessageFrame) \
                and frame.message.get("type") == "speech.chunk":
            self.words += frame.message["words"]
        elif isinstance(frame, TTSStoppedFrame):
            self.done.set()
        await self.push_frame(frame, direction)


async def _run(settings: Settings, turns: int) -> list[dict]:
    engines = load_engines(settings)
    conversation = build_pipeline(engines, settings)
    replies = _Replies()
    worker = PipelineWorker(Pipeline([conversation.pipeline, replies]),
                            cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(1.0)
    rows = []
    for i in range(turns):
        replies.words, t0 = [], time.monotonic()
        replies.done.clear()
        await worker.queue_frame(LLMMessagesAppendFrame(
            [{"role": "user", "content": question(i)}], run_llm=True))
        try:
            await asyncio.wait_for(replies.done.wait(), timeout=180)
        except asyncio.TimeoutError:
            pass
        rows.append({"turn": i + 1, "words": len(replies.words),
                     "prompt_tokens": engines.llm.last_prompt_tokens,
                     "history": len(conversation.context.get_messages()),
                     "seconds": time.monotonic() - t0})
        print(f"turn {i + 1}: {len(replies.words)} words, prompt "
              f"{engines.llm.last_prompt_tokens} tokens, {rows[-1]['seconds']:.1f} s", flush=True)
    await worker.queue_frame(EndFrame())
    await running
    return rows


def run_long_bench(settings: Settings, turns: int) -> tuple[str, str]:
    rows = asyncio.run(_run(settings, turns))
    budget = settings.llm_context_tokens - settings.llm_max_tokens
    answered = sum(1 for r in rows if r["words"])
    top = max(r["prompt_tokens"] for r in rows)
    full = next((r["turn"] for r in rows if r["prompt_tokens"] > 0.9 * budget), None)
    table = "\n".join([
        "| turns | answered | largest prompt | budget | history at the end | "
        "window full from turn | seconds per turn (median) |",
        "|---|---|---|---|---|---|---|",
        f"| {len(rows)} | {answered} | {top} tokens | {budget} tokens | "
        f"{rows[-1]['history']} messages | {full or '-'} | "
        f"{statistics.median(r['seconds'] for r in rows):.1f} |"])
    notes = ("Typed turns (`LLMMessagesAppendFrame`) through the whole pipeline, spoken by Kokoro; "
             "the context keeps every message, the LLM sees the newest that fit "
             "(stack/engines/llm.py `fit`).")
    return table, notes
