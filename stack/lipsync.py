"""Where word and viseme timings come from: Kokoro's own per-phoneme durations.

Kokoro predicts, for every input token, a duration in frames of 600 samples at 24 kHz (25 ms).
The audio it renders is exactly ``sum(durations) * 600`` samples long, so the timings below are
not estimates: they are the model's own schedule for its own audio.

Input tokens are ``[BOS] + phoneme characters of the utterance + [EOS]``; ``build_tokens`` keeps,
for each token, the word it belongs to. ``align`` turns (tokens, durations) into:

- word timings: each word spans its phoneme tokens (punctuation and spaces are not words);
- viseme timings in the Oculus set TalkingHead uses, one per articulated phoneme (diphthongs
  are two visemes), ``sil`` for silence and pauses, equal visemes in a row merged.

Times are milliseconds from the chunk's first sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 600  # Kokoro's duration unit
FRAME_MS = FRAME_SAMPLES * 1000 / SAMPLE_RATE  # 25 ms

OCULUS_VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR",
                  "aa", "E", "I", "O", "U")

# Misaki phoneme (what Kokoro reads) -> Oculus viseme(s). Diphthongs map to two visemes that
# share the phoneme's duration. Characters absent here (stress ˈ ˌ, length ː) do not move the
# mouth on their own: their time is given to the phoneme they modify.
PHONEME_TO_VISEME: dict[str, tuple[str, ...]] = {
    # bilabials, labiodentals, dentals
    "p": ("PP",), "b": ("PP",), "m": ("PP",),
    "f": ("FF",), "v": ("FF",),
    "θ": ("TH",), "ð": ("TH",),
    # alveolars and velars
    "t": ("DD",), "d": ("DD",), "ɾ": ("DD",), "T": ("DD",), "ʔ": ("DD",),
    "k": ("kk",), "g": ("kk",), "ɡ": ("kk",), "ŋ": ("kk",), "x": ("kk",), "h": ("kk",),
    "n": ("nn",), "l": ("nn",), "ɫ": ("nn",),
    "s": ("SS",), "z": ("SS",),
    "ʃ": ("CH",), "ʒ": ("CH",), "ʧ": ("CH",), "ʤ": ("CH",), "ç": ("CH",), "j": ("I",),
    "ɹ": ("RR",), "r": ("RR",), "w": ("U",),
    # monophthongs
    "ɑ": ("aa",), "a": ("aa",), "æ": ("aa",), "ɐ": ("aa",), "ʌ": ("aa",), "ɒ": ("O",),
    "ə": ("E",), "ᵊ": ("E",), "ɚ": ("RR",), "ɛ": ("E",), "e": ("E",), "ɜ": ("E",),
    "ɪ": ("I",), "i": ("I",), "ᵻ": ("I",), "y": ("I",),
    "ɔ": ("O",), "o": ("O",),
    "ʊ": ("U",), "u": ("U",),
    # misaki's diphthong letters
    "A": ("E", "I"),  # eɪ
    "I": ("aa", "I"),  # aɪ
    "O": ("O", "U"),  # oʊ
    "Q": ("E", "U"),  # əʊ (British)
    "W": ("aa", "U"),  # aʊ
    "Y": ("O", "I"),  # ɔɪ
}
# Punctuation Kokoro reads: it shapes prosody and pauses, but is silence for the mouth.
PUNCTUATION = frozenset(';:,.!?—…"()“”')


@dataclass(frozen=True)
class WordPhonemes:
    """A word (or punctuation mark) of the text and the phonemes Kokoro reads for it."""

    text: str
    phonemes: str
    whitespace: bool = True  # a space follows it
    is_word: bool = True  # False for punctuation: it has a duration but is not spoken


@dataclass
class Tokens:
    ids: list[int]
    chars: list[str]  # the phoneme character of each id ("" for BOS/EOS)
    word_of: list[int | None]  # index into the words list, None for BOS/EOS/spaces


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_ms: float
    duration_ms: float


@dataclass(frozen=True)
class VisemeTiming:
    viseme: str
    start_ms: float
    duration_ms: float


@dataclass
class SpeechTiming:
    words: list[WordTiming] = field(default_factory=list)
    visemes: list[VisemeTiming] = field(default_factory=list)
    duration_ms: float = 0.0


def build_tokens(words: list[WordPhonemes], vocab: dict[str, int]) -> Tokens:
    """Token ids for Kokoro, remembering which word each token came from.

    Phoneme characters Kokoro does not know are dropped, as Kokoro's own pipeline does."""
    tokens = Tokens([0], [""], [None])
    for wi, w in enumerate(words):
        for ch in w.phonemes:
            if ch in vocab:
                tokens.ids.append(vocab[ch])
                tokens.chars.append(ch)
                tokens.word_of.append(wi if w.is_word and ch not in PUNCTUATION else None)
        if w.whitespace and wi < len(words) - 1 and " " in vocab:
            tokens.ids.append(vocab[" "])
            tokens.chars.append(" ")
            tokens.word_of.append(None)
    tokens.ids.append(0)
    tokens.chars.append("")
    tokens.word_of.append(None)
    return tokens


def align(words: list[WordPhonemes], tokens: Tokens, durations: list[int]) -> SpeechTiming:
    """Word and viseme timings from Kokoro's per-token durations (in frames)."""
    if len(durations) != len(tokens.ids):
        raise ValueError(f"{len(durations)} durations for {len(tokens.ids)} tokens")
    starts = [0.0]
    for d in durations:
        starts.append(starts[-1] + d * FRAME_MS)
    out = SpeechTiming(duration_ms=starts[-1])

    # Words: from the start of their first token to the end of their last one.
    spans: dict[int, list[int]] = {}
    for ti, wi in enumerate(tokens.word_of):
        if wi is not None:
            spans.setdefault(wi, [ti, ti])[1] = ti
    for wi in sorted(spans):
        first, last = spans[wi]
        out.words.append(WordTiming(words[wi].text, starts[first],
                                    starts[last + 1] - starts[first]))

    # Visemes: one segment per articulated phoneme; modifiers lend their time to a neighbour.
    segments: list[list] = []  # [viseme, start_ms, duration_ms]
    pending = 0.0  # time of modifiers at a word's start, given to the next phoneme
    prev_word: int | None = None
    for ti, ch in enumerate(tokens.chars):
        dur = durations[ti] * FRAME_MS
        wi = tokens.word_of[ti]
        vis = PHONEME_TO_VISEME.get(ch) if wi is not None else ("sil",)
        if vis is None:  # a modifier (or an unknown symbol) inside a word
            if segments and prev_word == wi and segments[-1][0] != "sil":
                segments[-1][2] += dur
            else:
                pending += dur
            continue
        start = starts[ti] - pending
        dur += pending
        pending = 0.0
        part = dur / len(vis)
        for k, v in enumerate(vis):
            segments.append([v, start + k * part, part])
        prev_word = wi
    if pending and segments:
        segments[-1][2] += pending
    for v, start, dur in segments:
        if dur <= 0:
            continue
        if out.visemes and out.visemes[-1].viseme == v:
            last = out.visemes[-1]
            out.visemes[-1] = VisemeTiming(v, last.start_ms, last.duration_ms + dur)
        else:
            out.visemes.append(VisemeTiming(v, start, dur))
    return out


# The onset rule, the one definition both sides use: the bot here, on the audio it sends; the
# page on the audio it hears (web/public/onset-worklet.js, given these through the protocol
# schema's "x-onset-rule", generated into web/src/gen/onset.ts).
ONSET_WINDOW_MS = 5  # the rule looks at windows this long
ONSET_LEVEL = 0.01  # RMS (-40 dBFS) of a window where the voice counts as audible
ONSET_SAMPLE_LEVEL = 2 * ONSET_LEVEL  # in the first loud window, the onset is the first sample
PAUSE_MIN_MS = 150  # quiet this long before a sound makes it an onset


def _loud_windows(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    win = max(1, sample_rate * ONSET_WINDOW_MS // 1000)
    n = len(audio) // win
    frames = audio[: n * win].reshape(n, win)
    return np.sqrt((frames ** 2).mean(axis=1)) >= ONSET_LEVEL, win


def _onset_in(audio: np.ndarray, i: int, win: int, sample_rate: int) -> float:
    """The first sample of loud window ``i`` at ``ONSET_SAMPLE_LEVEL`` (its start if none), ms."""
    first = int(np.argmax(np.abs(audio[i * win:(i + 1) * win]) >= ONSET_SAMPLE_LEVEL))
    return (i * win + first) * 1000 / sample_rate


def voice_pauses_ms(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[tuple[float, float]]:
    """The quiet stretches a listener with the onset rule hears in ``audio``: (start, end) in ms of
    every run of windows below ``ONSET_LEVEL`` that lasts ``PAUSE_MIN_MS`` or more and ends
    in voice (the end is that voice's onset; the chunk's start counts as quiet). Natural pauses
    hide in stop consonants' durations too, so the visemes alone cannot say where they are; a
    client compares these with the pauses it hears and so tells a pause from a hole in the audio."""
    loud, win = _loud_windows(audio, sample_rate)
    ms = win * 1000 / sample_rate
    pauses, quiet_from = [], 0  # quiet_from: first window of the quiet run before window i
    for i in np.flatnonzero(loud):
        if i > quiet_from and (quiet_from == 0 or (i - quiet_from) * ms >= PAUSE_MIN_MS):
            pauses.append((float(quiet_from * ms), _onset_in(audio, i, win, sample_rate)))
        quiet_from = i + 1
    return pauses


def voice_onset_ms(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """Where speech first becomes audible in ``audio``: the first loud sample of the first 5 ms
    window above ``ONSET_LEVEL``. Kokoro's voice starts 30-80 ms before its first phoneme's
    duration boundary, so a client that aligns on the onset it hears (web/src/lipsync/
    scheduler.ts, with the same rule) needs this, not the first word's time."""
    loud, win = _loud_windows(audio, sample_rate)
    if not loud.any():
        return None
    return _onset_in(audio, int(np.argmax(loud)), win, sample_rate)
