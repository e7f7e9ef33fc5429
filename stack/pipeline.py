"""The bot's conversation pipeline: mic audio -> VAD/turns -> STT -> LLM -> TTS -> audio + timings
(typed chat joins before the LLM: stack/chat.py).

Models are loaded once per process (``stack.engines.load.load_engines``) and shared by every
conversation; each conversation gets its own pipeline and ``LLMContext`` (``build_pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TTSService

from .chat import TypedTextGuard
from .config import Settings
from .engines.load import Engines
from .services.llm import LocalLlamaLLMService
from .services.stt import LocalWhisperSTTService
from .services.tts import LocalKokoroTTSService, keep_interrupted_words_out
from .turns import STT_HANG_TIMEOUT_S, user_turn_strategies


class MicAudioEnd(FrameProcessor):
    """The person's audio ends here, after the user aggregator (VAD and turn detection, its last
    reader). Pipecat passes it on to the pipeline's end otherwise: through the LLM, TTS, output
    transport and assistant aggregator, each hop a queue and a call to every observer, for every
    frame of a conversation's audio and for nothing (docs/benchmarks.md, "The person's audio")."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)


@dataclass
class Conversation:
    pipeline: Pipeline
    context: LLMContext
    tts: TTSService


def build_pipeline(engines: Engines, settings: Settings, *,
                   transport_input: FrameProcessor | None = None,
                   transport_output: FrameProcessor | None = None,
                   tts_options: dict | None = None) -> Conversation:
    """One conversation's pipeline. Without transports (tests) audio frames are pushed in by
    hand. ``tts_options``: LocalKokoroTTSService's streaming rules, for the benchmark's
    baseline."""
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.2)),
            # VAD (or a fresh transcript) starts a turn; smart-turn v3 decides when it ended,
            # and it ends once all its speech is transcribed, however slow the STT: stack/turns.py
            user_turn_strategies=user_turn_strategies(),
            user_turn_stop_timeout=STT_HANG_TIMEOUT_S,
        ),
    )
    stt = LocalWhisperSTTService(engines.stt)
    llm = LocalLlamaLLMService(engines.llm, system_instruction=settings.system_prompt,
                               max_tokens=settings.llm_max_tokens,
                               temperature=settings.temperature,
                               repeat_penalty=settings.llm_repeat_penalty)
    tts = LocalKokoroTTSService(engines.tts, voice=settings.tts_voice, speed=settings.tts_speed,
                                **(tts_options or {}))
    processors = [stt, TypedTextGuard(), aggregators.user(), MicAudioEnd(), llm, tts]
    if transport_input is not None:
        processors.insert(0, transport_input)
    if transport_output is not None:
        processors.append(transport_output)
    assistant = aggregators.assistant()
    keep_interrupted_words_out(assistant)
    processors.append(assistant)
    return Conversation(Pipeline(processors), context, tts)
