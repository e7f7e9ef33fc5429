"""Word and viseme timings from Kokoro durations (pure functions, no model)."""

import pytest

from stack.lipsync import (
    FRAME_MS,
    OCULUS_VISEMES,
    PHONEME_TO_VISEME,
    WordPhonemes,
    align,
    build_tokens,
)

VOCAB = {c: i + 1 for i, c in enumerate(" .,!?ˈˌːhəlOwɜɹdðAIkæpTᵊʌvfnsɪzɛ")}


def _words():
    return [WordPhonemes("Hello", "həlˈO", False), WordPhonemes(",", ",", True, is_word=False),
            WordPhonemes("world", "wˈɜɹld", False), WordPhonemes(".", ".", False, is_word=False)]


def test_tokens_keep_their_words():
    tokens = build_tokens(_words(), VOCAB)
    assert tokens.ids[0] == 0 and tokens.ids[-1] == 0
    assert "".join(tokens.chars) == "həlˈO, wˈɜɹld."
    assert tokens.word_of[1:6] == [0] * 5
    assert tokens.word_of[6] is None  # the comma is not part of a word


def test_alignment_follows_durations_exactly():
    words = _words()
    tokens = build_tokens(words, VOCAB)
    durations = [3] + [2] * (len(tokens.ids) - 2) + [4]
    timing = align(words, tokens, durations)
    assert timing.duration_ms == sum(durations) * FRAME_MS
    assert [w.word for w in timing.words] == ["Hello", "world"]
    hello, world = timing.words
    assert hello.start_ms == 3 * FRAME_MS and hello.duration_ms == 5 * 2 * FRAME_MS
    # comma and space lie between the words
    assert world.start_ms == hello.start_ms + hello.duration_ms + 2 * 2 * FRAME_MS
    # visemes tile the whole chunk, without gaps or overlaps
    t = 0.0
    for v in timing.visemes:
        assert v.viseme in OCULUS_VISEMES
        assert v.start_ms == pytest.approx(t)
        t += v.duration_ms
    assert t == pytest.approx(timing.duration_ms)
    assert timing.visemes[0].viseme == "sil" and timing.visemes[-1].viseme == "sil"
    # the diphthong O (oʊ) becomes O then U; h-ə-l gives kk E nn
    seq = [v.viseme for v in timing.visemes]
    assert seq[:6] == ["sil", "kk", "E", "nn", "O", "U"]


def test_wrong_number_of_durations_is_refused():
    words = _words()
    tokens = build_tokens(words, VOCAB)
    with pytest.raises(ValueError, match="durations"):
        align(words, tokens, [1, 2, 3])


def test_viseme_table_uses_only_oculus_names():
    assert {v for vs in PHONEME_TO_VISEME.values() for v in vs} <= set(OCULUS_VISEMES)


def test_voice_onset_is_where_the_audio_becomes_audible(engines):
    import numpy as np

    from stack.lipsync import voice_onset_ms

    chunk = next(engines.tts.synthesize("Hello there, how are you?"))
    onset = voice_onset_ms(chunk.audio)
    first_word = chunk.timing.words[0].start_ms
    # Kokoro's voice starts a little before its first phoneme's duration boundary
    assert first_word - 120 < onset < first_word + 25, (onset, first_word)
    before = chunk.audio[: int(onset * 24) // 120 * 120].reshape(-1, 120)  # 5 ms windows
    assert np.sqrt((before ** 2).mean(axis=1)).max(initial=0) < 0.01  # quiet before it
    assert voice_onset_ms(np.zeros(24000, np.float32)) is None
    padded = np.concatenate([np.zeros(2400, np.float32), chunk.audio])
    assert voice_onset_ms(padded) == pytest.approx(onset + 100, abs=0.1)


def test_voice_pauses_are_the_quiet_stretches_a_listener_hears_before_an_onset(engines):
    import numpy as np

    from stack.lipsync import voice_onset_ms, voice_pauses_ms

    chunk = next(engines.tts.synthesize("Hello there."))
    onset = voice_onset_ms(chunk.audio)
    lead, gap = np.zeros(2400, np.float32), np.zeros(7200, np.float32)
    audio = np.concatenate([lead, chunk.audio, gap, chunk.audio])
    pauses = voice_pauses_ms(audio)
    assert len(pauses) == 2
    assert pauses[0] == (0.0, pytest.approx(100 + onset, abs=0.1))  # the start counts as quiet
    start, end = pauses[1]
    second = (len(lead) + len(chunk.audio) + len(gap)) / 24
    assert end == pytest.approx(second + onset, abs=0.1)  # ends where the voice comes back
    assert 100 + onset < start and end - start >= 300 + onset  # the gap and the quiet around it
    # a quiet stretch counts from 150 ms on (the web client's onset rule)
    rng = np.random.default_rng(0)
    burst = (rng.standard_normal(2400) * 0.1).astype(np.float32)
    tones = np.concatenate([burst, np.zeros(int(0.14 * 24000), np.float32), burst,
                            np.zeros(int(0.16 * 24000), np.float32), burst])
    assert [(round(a), round(b)) for a, b in voice_pauses_ms(tones)] == [(340, 500)]
    assert voice_pauses_ms(np.zeros(24000, np.float32)) == []
