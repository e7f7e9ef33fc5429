"""Kokoro-82M text-to-speech with the model's own word and viseme timings.

One interface, two backends, both returning (audio, per-token durations):
- ``torch``: the ``kokoro`` package's ``KModel`` (the GPU default);
- ``onnx``: onnxruntime on the int8 graph (the CPU default), see ``kokoro_onnx``.

``KokoroTTS.synthesize(text)`` yields one ``SpeechChunk`` per piece of at most ``MAX_TOKENS``
phonemes, each with its 24 kHz audio and its timings (``stack.lipsync``).
Invariant: ``len(chunk.audio) == sum(chunk.durations) * 600``.
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..lipsync import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    SpeechTiming,
    WordPhonemes,
    align,
    build_tokens,
    voice_onset_ms,
)
from .g2p import G2P

MAX_TOKENS = 400  # Kokoro's context is 512 tokens; shorter chunks also start playing sooner
_SENTENCE_END = frozenset(".!?…;:")
_CLAUSE_END = frozenset(",—")
FIRST_CHUNK_TOKENS = 30  # ~6 words: the first audio of a reply comes after ~1 s on one core
FIRST_CLAUSE_TOKENS = 12  # a first clause shorter than this (~3 words) waits for more
CHUNK_GROWTH = 0.8  # a later chunk: at most 0.8 x the phonemes its reply made before it
QUICK_START_LEAD_FRAMES = 2  # 50 ms of Kokoro's ~350 ms leading silence kept before a reply
# ...and 200 ms before each later chunk: with the end of the chunk before (its punctuation and
# end token) a natural pause between sentences, and not a gap where a chunk ends mid-sentence.
LATER_LEAD_FRAMES = 8
# Kokoro's voice often starts inside that silence, up to ~130 ms before the first phoneme's
# frame (the breath before "Yes", the hiss of "Sure"): a cut never drops audio where the onset
# rule hears voice (stack/lipsync.py: a 5 ms window at -40 dBFS), so a reply does not begin with
# a click and a clipped first sound.
FADE_IN_SAMPLES = 120  # 5 ms ramp where a cut starts the audio


class KokoroBackend(Protocol):
    name: str
    device: str  # where it runs: "cuda" or "cpu"

    def infer(self, token_ids: list[int], style: np.ndarray,
              speed: float) -> tuple[np.ndarray, np.ndarray]:
        ...


@dataclass
class SpeechChunk:
    text: str
    audio: np.ndarray  # float32, mono, 24 kHz
    durations: list[int]  # frames of 600 samples, one per input token (BOS and EOS included)
    timing: SpeechTiming

    def pcm16(self) -> bytes:
        return (np.clip(self.audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class KokoroTorchBackend:
    """``kokoro.KModel`` from local files: ``config.json`` and a ``.pth`` state dict."""

    name = "torch"

    def __init__(self, config_path: Path, model_path: Path, device: str = "cpu"):
        import torch
        from kokoro import KModel

        self.torch = torch
        self.model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(config_path),
                            model=str(model_path)).to(device).eval()
        self.device = device

    def infer(self, token_ids: list[int], style: np.ndarray,
              speed: float) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        ref = torch.as_tensor(np.asarray(style, dtype=np.float32).reshape(1, 256),
                              device=self.device)
        audio, durations = self.model.forward_with_tokens(ids, ref, speed)
        return (audio.reshape(-1).float().cpu().numpy(),
                durations.reshape(-1).cpu().numpy().astype(np.int64))


class VoiceBank:
    """Kokoro voices from a directory: ``<name>.bin`` (raw float32) or ``<name>.pt`` (torch)."""

    def __init__(self, voices_dir: Path):
        self.dir = Path(voices_dir)
        self._cache: dict[str, np.ndarray] = {}

    def names(self) -> list[str]:
        return sorted({p.stem for pattern in ("*.bin", "*.pt") for p in self.dir.glob(pattern)})

    def get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            bin_path, pt_path = self.dir / f"{name}.bin", self.dir / f"{name}.pt"
            if bin_path.is_file():
                pack = np.fromfile(bin_path, dtype=np.float32)
            elif pt_path.is_file():
                import torch

                pack = torch.load(pt_path, map_location="cpu", weights_only=True).numpy()
            else:
                raise ValueError(f"unknown voice {name!r}; available: {', '.join(self.names())}")
            self._cache[name] = pack.reshape(-1, 256)
        return self._cache[name]

    def style(self, name: str, n_phonemes: int) -> np.ndarray:
        """Kokoro's voices hold one style vector per utterance length (as KPipeline indexes)."""
        pack = self.get(name)
        return pack[min(max(n_phonemes - 1, 0), len(pack) - 1)]


@dataclass
class ChunkPlan:
    """How many phonemes the next chunk of one reply may hold, carried across its sentences.

    The first chunk is short: its synthesis is what a person waits for. Each later one may hold
    at most ``CHUNK_GROWTH`` times the phonemes the reply has made so far, so that it is ready
    before the audio already made has played: on one CPU thread Kokoro takes ~0.4 s plus ~30 ms
    per phoneme for audio that lasts ~55 ms per phoneme (python scripts/bench.py --engines has
    the machine's rate). Sizes grow about 1.8 times per chunk, up to ``MAX_TOKENS``. Until now a
    reply's second chunk was the rest of its first sentence, however long."""

    first_tokens: int = FIRST_CHUNK_TOKENS
    growth: float = CHUNK_GROWTH
    later_lead_frames: int | None = LATER_LEAD_FRAMES  # None: Kokoro's own (~350 ms)
    made: int = 0  # chunks planned so far
    tokens: int = 0  # their phonemes

    @property
    def limit(self) -> int:
        """The next chunk's phonemes at most."""
        return min(MAX_TOKENS, max(self.first_tokens, int(self.tokens * self.growth)))

    def took(self, tokens: int) -> None:
        self.made += 1
        self.tokens += tokens


def _word_tokens(w: WordPhonemes) -> int:
    return len(w.phonemes) + 1  # its phonemes and the space (or mark) after it


def _tokens(words: list[WordPhonemes]) -> int:
    return sum(_word_tokens(w) for w in words)


def _best_cut(words: list[WordPhonemes], min_tokens: int) -> int:
    """Where to end a chunk that is full: after its last sentence end, else its last clause end,
    else (a clause longer than the chunk) after its last word; never leaving it shorter than
    ``min_tokens`` (a tiny chunk costs Kokoro's fixed time and plays too briefly to cover the
    next one's)."""
    for ends in (_SENTENCE_END, _CLAUSE_END):
        for i in range(len(words) - 1, 0, -1):
            if words[i - 1].phonemes[-1:] in ends and _tokens(words[:i]) >= min_tokens:
                return i
    return len(words)


def _to_sentence_end(words: list[WordPhonemes]) -> list[int]:
    """For each word, the phonemes from it to the end of its sentence."""
    left, run = [0] * len(words), 0
    for i in range(len(words) - 1, -1, -1):
        if words[i].phonemes[-1:] in _SENTENCE_END:
            run = 0
        run += _word_tokens(words[i])
        left[i] = run
    return left


def split_words(words: list[WordPhonemes], max_tokens: int = MAX_TOKENS,
                plan: ChunkPlan | None = None) -> list[list[WordPhonemes]]:
    """Group words into chunks of at most ``max_tokens`` phonemes (or the sizes ``plan`` allows),
    cut where a speaker would pause: a sentence end, else a clause end, else a word. The last few
    words of a sentence stay with the chunk before them rather than make a chunk of their own.

    With a ``plan`` that has made nothing yet (a reply's start), the first clause past a few words
    also goes out on its own: the first audio then comes after a fraction of the sentence's
    synthesis time."""
    chunks: list[list[WordPhonemes]] = []
    current: list[WordPhonemes] = []
    left = _to_sentence_end(words)

    def starting() -> bool:
        return plan is not None and plan.made == 0

    def close(cut: int) -> None:
        nonlocal current
        chunks.append(current[:cut])
        if plan is not None:
            plan.took(_tokens(current[:cut]))
        current = current[cut:]

    for i, w in enumerate(words):
        limit = plan.limit if plan is not None else max_tokens
        over = _tokens(current) + _word_tokens(w) - limit
        if current and over > 0 and (left[i] > FIRST_CLAUSE_TOKENS or over > FIRST_CLAUSE_TOKENS):
            close(_best_cut(current, FIRST_CLAUSE_TOKENS if starting()
                            else max(FIRST_CLAUSE_TOKENS, limit // 3)))
        current.append(w)
        end = w.phonemes[-1:]
        if starting() and (end in _SENTENCE_END or (
                end in _CLAUSE_END and _tokens(current) >= FIRST_CLAUSE_TOKENS)):
            close(len(current))  # the first clause goes out on its own
    if current:
        close(len(current))
    return chunks


def _per_kind(zero):
    return field(default_factory=lambda: {"first": zero, "later": zero})


@dataclass
class SynthesisStats:
    """What the synthesis queue has seen, per kind of chunk (a reply's first, or a later one):
    how many ran, how long they waited for a worker, how long Kokoro took to make them and how
    much audio it made, summed (read by /metrics). Synthesis time over wall time is how busy
    the workers are; over audio time, the real-time factor: a machine whose conversations
    need more audio per second than the workers can make falls behind whatever the queue does."""

    chunks: dict[str, int] = _per_kind(0)
    wait_seconds: dict[str, float] = _per_kind(0.0)
    synthesis_seconds: dict[str, float] = _per_kind(0.0)
    audio_seconds: dict[str, float] = _per_kind(0.0)


class FirstChunksFirst:
    """At most ``slots`` syntheses at a time (TTS_WORKERS), and the first chunk of a reply
    before any later chunk of another: first audio is what a person waits for, while a later
    chunk has the audio before it still playing. Otherwise in order of arrival."""

    def __init__(self, slots: int = 1):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self.slots = slots
        self.stats = SynthesisStats()
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[tuple[int, int]] = []  # (priority, ticket), a heap
        self._tickets = 0

    def acquire(self, first: bool, cancel: threading.Event | None = None) -> bool:
        """Wait for a free worker; False if ``cancel`` was set first (the request is gone)."""
        kind = "first" if first else "later"
        asked = time.monotonic()
        with self._cond:
            self._tickets += 1
            me = (0 if first else 1, self._tickets)
            heapq.heappush(self._waiting, me)
            while self._running >= self.slots or self._waiting[0] != me:
                if cancel is not None and cancel.is_set():
                    self._waiting.remove(me)
                    heapq.heapify(self._waiting)
                    self._cond.notify_all()
                    return False
                self._cond.wait(timeout=0.05 if cancel is not None else None)
            heapq.heappop(self._waiting)
            self._running += 1
            self.stats.chunks[kind] += 1
            self.stats.wait_seconds[kind] += time.monotonic() - asked
            self._cond.notify_all()  # the next in line may take another free worker
            return True

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def made(self, first: bool, seconds: float, audio_seconds: float) -> None:
        """A synthesis took ``seconds`` and made ``audio_seconds`` of audio."""
        kind = "first" if first else "later"
        with self._cond:
            self.stats.synthesis_seconds[kind] += seconds
            self.stats.audio_seconds[kind] += audio_seconds


class KokoroTTS:
    def __init__(self, backend: KokoroBackend, vocab: dict[str, int], voices: VoiceBank,
                 g2p: G2P, default_voice: str, workers: int = 1):
        self.backend = backend
        self.vocab = vocab
        self.voices = voices
        self.g2p = g2p
        self.default_voice = default_voice
        self.sample_rate = SAMPLE_RATE
        # ``workers`` inferences at once on the one model (TTS_WORKERS): onnxruntime's and
        # torch's inference may be called from several threads. Two at once make 1.7x the audio
        # on 2 idle cores, but gained nothing at 4 conversations on 2 busy ones
        # (docs/benchmarks.md), hence a default of one.
        self._queue = FirstChunksFirst(workers)
        voices.get(default_voice)

    @property
    def stats(self) -> SynthesisStats:
        return self._queue.stats

    @property
    def workers(self) -> int:
        """Syntheses at once (TTS_WORKERS)."""
        return self._queue.slots

    @property
    def device(self) -> str:
        return self.backend.device

    @staticmethod
    def load_vocab(path: Path) -> dict[str, int]:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["vocab"]

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0, *,
                   quick_start: bool = False, plan: ChunkPlan | None = None,
                   cancel: threading.Event | None = None) -> Iterator[SpeechChunk]:
        """``quick_start``, for the start of a reply: the first chunk is a short clause and its
        leading silence is cut to ``QUICK_START_LEAD_FRAMES`` (never into the voice's onset:
        ``lead_cut``), so it is heard sooner, and it goes ahead of other replies' later chunks.
        ``plan``: the reply's chunk sizes so far (its earlier sentences); a fresh plan is a
        quick start. ``cancel`` stops before the next chunk, also while it waits for the
        engine."""
        if plan is None and quick_start:
            plan = ChunkPlan()
        starts_reply = plan is not None and plan.made == 0
        later_lead = plan.later_lead_frames if plan is not None else LATER_LEAD_FRAMES
        for i, group in enumerate(split_words(self.g2p(text), plan=plan)):
            first = starts_reply and i == 0
            if cancel is not None and cancel.is_set():
                return
            chunk = self.synthesize_words(
                group, voice or self.default_voice, speed, first=first,
                max_lead_frames=QUICK_START_LEAD_FRAMES if first else later_lead, cancel=cancel)
            if chunk is not None:
                yield chunk

    def synthesize_words(self, words: list[WordPhonemes], voice: str, speed: float,
                         max_lead_frames: int | None = None, *, first: bool = False,
                         cancel: threading.Event | None = None) -> SpeechChunk | None:
        tokens = build_tokens(words, self.vocab)
        n_phonemes = len(tokens.ids) - 2
        if n_phonemes <= 0 or not any(w.is_word for w in words):
            return None
        style = self.voices.style(voice, n_phonemes)
        if not self._queue.acquire(first, cancel):
            return None
        began = time.monotonic()
        try:
            audio, durations = self.backend.infer(tokens.ids, style, speed)
        finally:
            self._queue.release()
        self._queue.made(first, time.monotonic() - began, len(audio) / SAMPLE_RATE)
        durations = [int(d) for d in durations]
        expected = sum(durations) * FRAME_SAMPLES
        if len(audio) != expected:  # the model's invariant; never paper over a mismatch
            raise RuntimeError(f"Kokoro returned {len(audio)} samples for {sum(durations)} frames")
        cut = lead_cut(audio, durations[0], max_lead_frames)
        if cut:
            # The BOS token's frames are the leading silence: drop whole frames of it, so the
            # timings (computed from the durations below) still match the audio exactly.
            audio = audio[cut * FRAME_SAMPLES:].copy()
            audio[:FADE_IN_SAMPLES] *= np.linspace(0.0, 1.0, FADE_IN_SAMPLES, dtype=audio.dtype)
            durations[0] -= cut
        text = "".join(w.text + (" " if w.whitespace else "") for w in words).strip()
        return SpeechChunk(text, audio, durations, align(words, tokens, durations))


def lead_cut(audio: np.ndarray, lead_frames: int, max_lead_frames: int | None) -> int:
    """How many of the ``lead_frames`` leading-silence frames to drop so that at most
    ``max_lead_frames`` are left, but only quiet ones: the cut stops one frame before the frame
    where the onset rule (``voice_onset_ms``, 5 ms windows, as the page hears it) finds voice."""
    if max_lead_frames is None or lead_frames <= max_lead_frames:
        return 0
    cut = lead_frames - max_lead_frames
    onset = voice_onset_ms(audio[:cut * FRAME_SAMPLES])
    return cut if onset is None else max(0, int(onset // FRAME_MS) - 1)


def load_tts(*, backend: str, model_path: Path, config_path: Path, voices_dir: Path,
             default_voice: str, spacy_model: Path | None = None, device: str = "cpu",
             threads: int | None = None, spin: bool = True, workers: int = 1,
             vnni_matmul: bool = True) -> KokoroTTS:
    """Build the TTS engine from local files; a missing file is named with the fix."""
    for p in (model_path, config_path, voices_dir):
        if not Path(p).exists():
            raise FileNotFoundError(
                f"{p} is missing; fetch it with python scripts/download_models.py")
    if backend == "torch":
        impl: KokoroBackend = KokoroTorchBackend(config_path, model_path, device)
    elif backend == "onnx":
        from .kokoro_onnx import KokoroOnnxBackend

        impl = KokoroOnnxBackend(model_path, threads=threads, device=device, spin=spin,
                                 vnni_matmul=vnni_matmul)
    else:
        raise ValueError(f"unknown TTS backend {backend!r} (torch or onnx)")
    return KokoroTTS(impl, KokoroTTS.load_vocab(config_path), VoiceBank(voices_dir),
                     G2P(spacy_model), default_voice, workers)
