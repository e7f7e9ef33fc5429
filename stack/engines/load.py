"""Load the three engines of a model profile once per process (no Pipecat here: scripts that
only need the models import this, not the pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..download import check_profile
from .device import resolve_device
from .llm import LlamaLLM
from .llm_batch import BatchedLlamaLLM
from .stt import WhisperSTT
from .tts import KokoroTTS, load_tts


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
    # All missing files at once, with the command that fetches them. Presence only: hashing
    # gigabytes at every start is download_models.py --check's job.
    missing = [root / s.path for s in check_profile(root, profile, verify=False)
               if s.state != "ok"]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} model file(s) of profile {profile.name!r} missing: "
            + ", ".join(map(str, missing[:5])) + (" …" if len(missing) > 5 else "")
            + f". Fetch them: python scripts/download_models.py --profile {profile.name} "
            f"--models-dir {root}")
    stt, llm, tts = load_stt(settings), load_llm(settings), load_kokoro(settings)
    return Engines(stt=stt, llm=llm, tts=tts, device=describe_devices(stt, llm, tts))


def describe_devices(stt: WhisperSTT, llm: LlamaLLM, tts: KokoroTTS) -> str:
    """"cuda" when every engine runs there, else each engine's: "stt cpu, llm cuda, tts cpu"."""
    devices = {"stt": stt.device, "llm": llm.device, "tts": tts.device}
    if len(set(devices.values())) == 1:
        return stt.device
    return ", ".join(f"{name} {device}" for name, device in devices.items())


def load_stt(settings: Settings) -> WhisperSTT:
    """Whisper with the settings' device, language, beam, threads and workers."""
    return WhisperSTT(settings.models_dir / settings.profile.stt_model,
                      device=resolve_device(*settings.engine_device("stt")),
                      language=settings.stt_language, beam_size=settings.stt_beam_size,
                      threads=settings.thread_budget["stt"], workers=settings.whisper_workers,
                      short_window=settings.stt_short_window)


def load_kokoro(settings: Settings) -> KokoroTTS:
    """Kokoro on the settings' device, backend (auto: the profile's), threads and workers."""
    profile, root = settings.profile, settings.models_dir
    backend = profile.tts_backend if settings.tts_backend == "auto" else settings.tts_backend
    return load_tts(backend=backend, model_path=root / profile.tts_model,
                    config_path=root / profile.tts_config, voices_dir=root / profile.voices_dir,
                    default_voice=settings.tts_voice or profile.default_voice,
                    spacy_model=root / profile.spacy_model if profile.spacy_model else None,
                    device=resolve_device(*settings.engine_device("tts")),
                    threads=settings.thread_budget["tts"],
                    workers=settings.kokoro_workers, vnni_matmul=settings.tts_vnni_matmul)


def load_llm(settings: Settings) -> LlamaLLM:
    """The LLM engine: batched when more than one conversation may generate at once."""
    path = settings.models_dir / settings.profile.llm_model
    device = resolve_device(*settings.engine_device("llm"))
    threads = settings.thread_budget["llm"]
    if settings.llm_sequences == 1:
        return LlamaLLM(path, device=device, n_ctx=settings.llm_context_tokens, threads=threads)
    return BatchedLlamaLLM(path, device=device, n_ctx=settings.llm_context_tokens,
                           threads=threads, parallel=settings.llm_sequences)
