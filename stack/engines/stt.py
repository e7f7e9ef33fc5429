"""Speech-to-text with faster-whisper (CTranslate2), loaded from a local model directory."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .device import resolve_device

SAMPLE_RATE = 16_000
FRAMES_PER_S = 100  # Whisper's log-mel frames
WINDOW_S = 30  # the window Whisper was trained on; faster-whisper pads every utterance to it
# An utterance is encoded with TAIL_S of the window after it (and at least MIN_WINDOW_S in all)
# instead of all 30 s: the encoder's cost follows its input, and on a short question it was 85 %
# of Whisper's time (570 -> 120 ms on one core). With a shorter window, tiny.en more often lost
# its place and repeated itself ("What is the capital of France? What is the capital of ...")
# and its word error rate rose; with these, it matched the whole window's on 161 test
# utterances (python scripts/bench.py --stt).
TAIL_S = 3
MIN_WINDOW_S = 10


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


def _repeats_at_end(words: list[str]) -> bool:
    """True when the words end with a phrase said twice in a row ("stop stop", "a b c a b c"):
    how a decoder that lost its place in the audio ends up."""
    n = len(words)
    return any(words[n - 2 * k:n - k] == words[n - k:] for k in range(1, n // 2 + 1))


def _window_frames(duration_s: float) -> int | None:
    """Encoder frames for an utterance of ``duration_s``; None: the full window."""
    window = max(MIN_WINDOW_S, math.ceil(duration_s + TAIL_S))
    return window * FRAMES_PER_S if window < WINDOW_S else None


class WhisperSTT:
    def __init__(self, model_dir: Path, *, device: str = "auto", compute_type: str | None = None,
                 language: str | None = "en", beam_size: int = 1, threads: int = 0,
                 workers: int = 1, short_window: bool = True):
        from faster_whisper import WhisperModel

        class _WindowedWhisper(WhisperModel):
            """Encodes only the first ``window.frames`` frames of faster-whisper's padded input
            (set per call, per thread: several transcriptions may run at once)."""

            window = threading.local()

            def encode(self, features):
                frames = getattr(self.window, "frames", None)
                if frames is not None and features.shape[-1] > frames:
                    features = features[..., :frames]
                return super().encode(features)

        if not (Path(model_dir) / "model.bin").is_file():
            raise FileNotFoundError(f"{Path(model_dir) / 'model.bin'} is missing; fetch it with "
                                    "python scripts/download_models.py")
        self.device = resolve_device(device)
        self.compute_type = compute_type or ("float16" if self.device == "cuda" else "int8")
        # ``workers``: transcriptions CTranslate2 runs at the same time (one model replica
        # each); with one, concurrent calls from several conversations wait for each other.
        self.model = _WindowedWhisper(str(model_dir), device=self.device,
                                      compute_type=self.compute_type, cpu_threads=threads,
                                      num_workers=workers, local_files_only=True)
        self.language = language
        self.beam_size = beam_size
        self.short_window = short_window
        self.whole_window_retries = 0  # short-window transcripts that repeated themselves

    def transcribe(self, audio: np.ndarray, *, word_timestamps: bool = True,
                   short_window: bool | None = None) -> Transcript:
        """``audio``: mono float32 at 16 kHz (or int16 PCM, converted here). ``short_window``
        (default: the engine's): encode the utterance with ``TAIL_S`` after it instead of
        Whisper's whole 30 s window; a transcript that ends by repeating itself is made again
        with the whole window."""
        if short_window is None:
            short_window = self.short_window
        audio = np.asarray(audio)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        frames = _window_frames(len(audio) / SAMPLE_RATE) if short_window else None
        transcript = self._transcribe(audio, word_timestamps, frames)
        if frames is not None and _repeats_at_end(_plain_words(transcript.text)):
            self.whole_window_retries += 1
            transcript = self._transcribe(audio, word_timestamps, None)
        return transcript

    def _transcribe(self, audio: np.ndarray, word_timestamps: bool,
                    frames: int | None) -> Transcript:
        self.model.window.frames = frames
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


def _plain_words(text: str) -> list[str]:
    return [w.strip(".,!?;:\"'").lower() for w in text.split()]
