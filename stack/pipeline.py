"""The bot's conversation pipeline: mic audio -> VAD/turns -> STT -> LLM -> TTS -> audio + timings.

Models are loaded once per process (``load_engines``) and shared by every conversation; each
conversation gets its own pipeline and ``LLMContext`` (``build_pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (LLMContextAggregatorPair,
                                                                   LLMUserAggregatorParams)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.tts_service import TTSService

from .config import Settings
from .engines.device import resolve_device
from .engines.llm import LlamaLLM
from .engines.llm_batch import BatchedLlamaLLM
from .engines.stt import WhisperSTT
from .engines.tts import KokoroTTS, load_tts
from .services.llm import LocalLlamaLLMService
from .services.stt import LocalWhisperSTTService
from .services.tts import LocalKokoroTTSService
from .turns import STT_HANG_TIMEOUT_S, user_turn_strategies


@dataclass
class Engines:
    stt: WhisperSTT
    llm: LlamaLLM
    tts: KokoroTTS
    device: str


def load_engines(settings: Settings) -> Engines:
    """Load the three models of the configured profile from ``settings.models_dir``."""
    profile = settings.profile
    root = settings.models_dir
    missing = [root / f.path for f in profile.files if not (root / f.path).is_file()]
    missing += [root / rel for rel, _ in profile.derived if not (root / rel).exists()]
    if missing:  # all at once, with the command that fetches them (hashes: download_models --check)
        raise FileNotFoundError(
            f"{len(missing)} model file(s) of profile {profile.name!r} missing: "
            + ", ".join(map(str, missing[:5])) + (" …" if len(missing) > 5 else "")
            + f". Fetch them: python scripts/download_models.py --profile {profile.name} "
            f"--models-dir {root}")
    device = resolve_device(settings.device)
    backend = settings.tts_backend
    if backend == "auto":
        backend = profile.tts_backend
    spacy_model = root / profile.spacy_model if profile.spacy_model else None
    return Engines(
        stt=WhisperSTT(root / profile.stt_model, device=device, language=settings.stt_language,
                       beam_size=settings.stt_beam_size),
        llm=load_llm(settings, device),
        tts=load_tts(backend=backend, model_path=root / profile.tts_model,
                     config_path=root / profile.tts_config, voices_dir=root / profile.voices_dir,
                     default_voice=settings.tts_voice or profile.default_voice,
                     spacy_model=spacy_model, device=device),
        device=device,
    )


def load_llm(settings: Settings, device: str) -> LlamaLLM:
    """The LLM engine: batched when more than one conversation may generate at once."""
    path = settings.models_dir / settings.profile.llm_model
    if settings.llm_sequences == 1:
        return LlamaLLM(path, device=device, n_ctx=settings.llm_context_tokens,
                        threads=settings.llm_threads)
    return BatchedLlamaLLM(path, device=device, n_ctx=settings.llm_context_tokens,
                           threads=settings.llm_threads, parallel=settings.llm_sequences)


@dataclass
class Conversation:
    pipeline: Pipeline
    context: LLMContext
    tts: TTSService


def build_pipeline(engines: Engines, settings: Settings, *, transport_input: FrameProcessor | None = None,
                   transport_output: FrameProcessor | None = None) -> Conversation:
    """One conversation's pipeline. Without transports (tests) audio frames are pushed in by hand."""
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
    tts = LocalKokoroTTSService(engines.tts, voice=settings.tts_voice, speed=settings.tts_speed)
    processors = [stt, aggregators.user(), llm, tts]
    if transport_input is not None:
        processors.insert(0, transport_input)
    if transport_output is not None:
        processors.append(transport_output)
    processors.append(aggregators.assistant())
    return Conversation(Pipeline(processors), context, tts)
