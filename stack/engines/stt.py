"""Speech-to-text with faster-whisper (CTranslate2), loaded from a local model directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .device import resolve_device

SAMPLE_RATE = 16_000


def resample(audio: np.ndarray, src: int, dst: int = SAMPLE_RATE) -> np.ndarray:
    """Linear-interpolation resampling, e.g. Kokoro's 24 kHz speech for Whisper: enough for
    recognition, not for listening."""
    n = int(round(len(audio) * dst / src))
    positions = np.linspace(0, len(audio) - 1, n)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the audio's first sample
    end: float
    probability: float


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    language: str = "en"
    duration: float = 0.0


class WhisperSTT:
    def __init__(self, model_dir: Path, *, device: str = "auto", compute_type: str | None = None,
                 language: str | None = "en", beam_size: int = 1, threads: int = 0,
                 workers: int = 1):
        from faster_whisper import WhisperModel

        if not (Path(model_dir) / "model.bin").is_file():
            raise FileNotFoundError(f"{Path(model_dir) / 'model.bin'} is missing; fetch it with "
                                    "python scripts/download_models.py")
        self.device = resolve_device(device)
        self.compute_type = compute_type or ("float16" if self.device == "cuda" else "int8")
        # ``workers``: transcriptions CTranslate2 runs at the same time (one model replica
        # each); with one, concurrent calls from several conversations wait for each other.
        self.model = WhisperModel(str(model_dir), device=self.device,
                                  compute_type=self.compute_type, cpu_threads=threads,
                                  num_workers=workers, local_files_only=True)
        self.language = language
        self.beam_size = beam_size

    def transcribe(self, audio: np.ndarray, *, word_timestamps: bool = True) -> Transcript:
        """``audio``: mono float32 at 16 kHz (or int16 PCM, converted here)."""
        audio = np.asarray(audio)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        # Latency first: greedy decoding, no cross-segment conditioning (each turn stands alone),
        # no internal VAD (the pipeline's VAD already cut the utterance).
        segments, info = self.model.transcribe(
            audio.astype(np.float32), language=self.language, beam_size=self.beam_size,
            word_timestamps=word_timestamps, condition_on_previous_text=False, vad_filter=False,
        )
        segments = list(segments)
        words = [Word(w.word.strip(), w.start, w.end, w.probability)
                 for s in segments for w in (s.words or [])]
        text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(text, words, info.language, info.duration)
