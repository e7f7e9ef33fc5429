"""The three engines on the real `test` models, on CPU."""

import json
import os
import threading
import time

import jiwer
import numpy as np
import pytest
from conftest import BECKETT

from stack.config import Settings
from stack.engines import stt as stt_module
from stack.engines.kokoro_onnx import KokoroOnnxBackend, convs_as_matmuls, cpu_has_vnni
from stack.engines.stt import resample
from stack.engines.tts import (
    CHUNK_GROWTH,
    FADE_IN_SAMPLES,
    FIRST_CHUNK_TOKENS,
    FIRST_CLAUSE_TOKENS,
    LATER_LEAD_FRAMES,
    MAX_TOKENS,
    QUICK_START_LEAD_FRAMES,
    ChunkPlan,
    FirstChunksFirst,
    KokoroTTS,
    split_words,
)
from stack.lipsync import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, voice_onset_ms


def _norm(text: str) -> str:
    return jiwer.RemovePunctuation()(text.lower()).strip()


def test_stt_transcribes_beckett(engines, beckett):
    transcript = engines.stt.transcribe(beckett)
    wer = jiwer.wer(_norm(BECKETT), _norm(transcript.text))
    assert wer <= 0.2, transcript.text
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts) and 0 <= starts[0] < starts[-1] <= len(beckett) / 16_000


def test_stt_accepts_int16_pcm(engines, beckett):
    pcm = (beckett * 32767).astype(np.int16)
    assert "fail better" in _norm(engines.stt.transcribe(pcm).text)


def _spoken(engines, text: str) -> np.ndarray:
    """``text`` in Kokoro's voice at Whisper's 16 kHz, with the VAD's silence around it."""
    audio = resample(np.concatenate([c.audio for c in engines.tts.synthesize(text)]), 24000)
    silence = np.zeros(4800, np.float32)
    return np.concatenate([silence, audio, silence])


@pytest.fixture
def encoder_frames(monkeypatch):
    """The number of log-mel frames each Whisper encoder call was given."""
    from faster_whisper import WhisperModel

    seen, encode = [], WhisperModel.encode

    def spy(self, features):
        seen.append(features.shape[-1])
        return encode(self, features)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    return seen


def test_stt_encodes_a_short_utterance_with_a_short_window(engines, encoder_frames):
    audio = _spoken(engines, "What is the capital of France?")
    assert len(audio) < 6 * 16_000
    short = engines.stt.transcribe(audio)
    assert encoder_frames == [stt_module.MIN_WINDOW_S * 100]  # not Whisper's 3000
    whole = engines.stt.transcribe(audio, short_window=False)
    assert encoder_frames[1:] == [3000]
    assert _norm(short.text) == _norm(whole.text) == "what is the capital of france"
    assert [w.word for w in short.words] == [w.word for w in whole.words]


def test_stt_transcribes_again_on_the_whole_window_when_the_short_one_repeats_itself(
        engines, encoder_frames):
    # A decoder that lost its place in a short window says the question again and again (seen
    # with a window that ends where the audio ends, though not on every run): a transcript that
    # ends by repeating itself is made again on Whisper's whole window. Here the person really
    # did say it twice, so both windows agree and the answer stays.
    audio = _spoken(engines, "Stop. Stop.")
    retries = engines.stt.whole_window_retries
    transcript = engines.stt.transcribe(audio)
    assert encoder_frames[0] == stt_module.MIN_WINDOW_S * 100 and encoder_frames[-1] == 3000
    assert engines.stt.whole_window_retries == retries + 1
    assert _norm(transcript.text).split() == ["stop", "stop"]


@pytest.mark.parametrize("text, repeated", [
    ("stop stop", True), ("What is it? What is it?", True), ("a b c a b c", True),
    ("Stop.", False), ("what is the capital of france", False), ("no no thanks", False),
    ("", False)])
def test_a_transcript_that_ends_by_repeating_itself_is_recognised(text, repeated):
    assert stt_module._repeats_at_end(stt_module._plain_words(text)) is repeated


# The product's own system prompt: what a user's question actually goes out with.
QUESTION = [{"role": "system", "content": Settings().system_prompt},
            {"role": "user", "content": "What is the capital of France?"}]


def test_llm_streams_an_answer(engines):
    pieces = list(engines.llm.stream(QUESTION, temperature=0, max_tokens=40))
    assert len(pieces) > 1
    assert "Paris" in "".join(pieces)


def test_llm_cancel_stops_generation_and_engine_serves_next(engines):
    cancel = threading.Event()
    pieces = []
    long_request = [{"role": "user", "content": "Write a very long story about a dragon."}]
    for piece in engines.llm.stream(long_request, max_tokens=500, temperature=0, cancel=cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert len(pieces) == 3  # nothing after the cancel
    # and the engine is usable again, from another thread too (as the service does)
    out = []
    t = threading.Thread(target=lambda: out.append(engines.llm.complete(QUESTION, temperature=0,
                                                                        max_tokens=40)))
    t.start()
    t.join(60)
    assert out and "Paris" in out[0]


def test_llm_cancel_from_another_thread(engines):
    """Barge-in: ``cancel()`` from elsewhere stops a running generation promptly."""
    received = []

    def run():
        for p in engines.llm.stream([{"role": "user", "content": "Count from 1 to 400."}],
                                    max_tokens=800, temperature=0):
            received.append(p)

    t = threading.Thread(target=run)
    t.start()
    while not received:
        time.sleep(0.01)
    engines.llm.cancel()
    t.join(10)
    assert not t.is_alive()
    assert len(received) < 400


SYSTEM = {"role": "system", "content": "You are a friendly assistant."}


def _history(turns: int) -> list[dict]:
    messages = [SYSTEM]
    for i in range(turns):
        messages += [{"role": "user", "content": f"Tell me about the number {i}, please."},
                     {"role": "assistant", "content": f"The number {i} comes right after {i - 1}."}]
    return messages + [{"role": "user", "content": "And what is the capital of France?"}]


def test_llm_fit_keeps_the_system_prompt_and_the_newest_turns(engines):
    from stack.engines.llm import REFILL

    llm = engines.llm
    budget = llm.n_ctx - 256
    short = _history(2)
    assert llm.fit(short, 256) == (short, 0)  # what fits is left alone
    long = _history(200)
    assert len(llm.prompt_tokens(long)) > llm.n_ctx  # would not fit at all
    fitted, start = llm.fit(long, 256)
    assert fitted[0] == SYSTEM and fitted[1:] == long[1 + start:]  # the newest, a suffix
    assert fitted[1]["role"] == "user" and fitted[-1] == long[-1]
    size = len(llm.prompt_tokens(fitted))
    # a quarter of the window freed at once, and no more than that
    assert budget * (1 - REFILL) - 150 <= size <= budget * (1 - REFILL), size

    # the next turns keep the same cut, so the prompt starts the same (llama.cpp's cache holds)
    grown = long + [{"role": "assistant", "content": "Paris."},
                    {"role": "user", "content": "And of Italy?"}]
    again, start2 = llm.fit(grown, 256, keep_from=start)
    assert start2 == start and again[:len(fitted)] == fitted
    # until it no longer fits: then the cut moves on, by a quarter of the window again
    more = grown + [m for i in range(40) for m in _history(1)[1 + 2 * (i % 1):3]]
    moved, start3 = llm.fit(more, 256, keep_from=start)
    assert start3 > start and len(llm.prompt_tokens(moved)) <= budget * (1 - REFILL)


def test_llm_one_oversized_message_keeps_its_end_and_is_answered(engines):
    llm = engines.llm
    filler = " ".join(["the cat sat on a mat while dogs ran in the park"] * 500)
    question = "What is the capital of France?"
    messages = [SYSTEM, {"role": "user", "content": f"{filler}. {question}"}]
    assert len(llm.prompt_tokens(messages)) > llm.n_ctx
    fitted, _ = llm.fit(messages, 256)
    assert len(llm.prompt_tokens(fitted)) <= llm.n_ctx - 256
    assert fitted[0] == SYSTEM and fitted[1]["content"].endswith(question)
    answer = llm.complete(messages, max_tokens=24, temperature=0)
    assert answer.strip() and llm.last_prompt_tokens <= llm.n_ctx - 24


def test_llm_a_system_prompt_over_the_budget_is_an_error_naming_the_settings(engines):
    llm = engines.llm
    long_system = {"role": "system", "content": " ".join(["Be kind and brief."] * 1500)}
    for messages in ([long_system], [long_system, {"role": "user", "content": "Hello?"}]):
        with pytest.raises(ValueError, match="LLM_CONTEXT_TOKENS - LLM_MAX_TOKENS"):
            llm.fit(messages, 256)


SENTENCES = [
    "Hello there! The capital of France is Paris.",
    "I would love to help you plan a trip to the mountains next summer.",
    "Kokoro predicts a duration for every phoneme, and we use it to move the lips.",
]


@pytest.mark.parametrize("text", SENTENCES)
def test_tts_round_trip(engines, text):
    chunks = list(engines.tts.synthesize(text))
    assert len(chunks) == 1
    chunk = chunks[0]
    # the model's own invariant: durations x 600 samples = the audio, exactly
    assert len(chunk.audio) == sum(chunk.durations) * FRAME_SAMPLES
    assert chunk.timing.duration_ms == len(chunk.audio) * 1000 / SAMPLE_RATE
    assert np.abs(chunk.audio).max() > 0.05  # not silence

    words = chunk.timing.words
    end_ms = 0.0
    for w in words:  # increasing, non-overlapping, inside the audio
        assert w.start_ms >= end_ms and w.duration_ms > 0
        end_ms = w.start_ms + w.duration_ms
    assert end_ms <= chunk.timing.duration_ms
    # they cover the audio: only the leading/trailing silences lie outside the words
    assert words[0].start_ms == chunk.durations[0] * 25
    assert chunk.timing.duration_ms - end_ms <= (chunk.durations[-1] + chunk.durations[-2]) * 25
    # visemes tile the chunk
    visemes_ms = sum(v.duration_ms for v in chunk.timing.visemes)
    assert visemes_ms == pytest.approx(chunk.timing.duration_ms)

    heard = engines.stt.transcribe(resample(chunk.audio, SAMPLE_RATE, 16_000))
    assert jiwer.wer(_norm(text), _norm(heard.text)) <= 0.2, heard.text

    # each word's start: TTS durations vs Whisper's word timestamps on the same audio; not the
    # first word, which Whisper puts at 0 ms whatever silence leads it (Kokoro's is ~350 ms)
    tts_words = [(_norm(w.word), w.start_ms) for w in words[1:]]
    stt_words = [(_norm(w.word), w.start * 1000) for w in heard.words[1:]]
    diffs, j = [], 0
    for word, start in stt_words:
        for k in range(j, len(tts_words)):
            if tts_words[k][0] == word:
                diffs.append(abs(tts_words[k][1] - start))
                j = k + 1
                break
    assert len(diffs) >= 0.8 * len(tts_words)
    assert np.mean(diffs) <= 120, diffs


def test_tts_long_text_is_split_and_each_chunk_is_exact(engines):
    text = " ".join(SENTENCES * 4)
    chunks = list(engines.tts.synthesize(text))
    assert len(chunks) > 1
    for c in chunks:
        assert len(c.audio) == sum(c.durations) * FRAME_SAMPLES
    said = " ".join(w.word for c in chunks for w in c.timing.words)
    assert _norm(said).split() == _norm(text).split()


def test_tts_unknown_voice_is_a_clear_error(engines):
    with pytest.raises(ValueError, match="unknown voice 'nobody'.*af_heart"):
        list(engines.tts.synthesize("Hi.", voice="nobody"))


def test_tts_quick_start_short_first_clause_and_trimmed_lead(engines):
    text = "Well, that is nice, and I am happy to answer your question in great detail."
    normal = list(engines.tts.synthesize(text))
    quick = list(engines.tts.synthesize(text, quick_start=True))
    assert len(quick) > len(normal)
    # cut at the first clause end past a dozen phonemes ("Well," alone would be too short)
    assert [w.word for w in quick[0].timing.words] == ["Well", "that", "is", "nice"]
    # 50 ms of leading silence, a little more where the voice starts before the first phoneme
    assert QUICK_START_LEAD_FRAMES <= quick[0].durations[0] < normal[0].durations[0]
    assert quick[0].timing.words[0].start_ms == quick[0].durations[0] * 25
    assert all(c.durations[0] <= LATER_LEAD_FRAMES for c in quick[1:])  # 200 ms between
    for c in quick:
        assert len(c.audio) == sum(c.durations) * FRAME_SAMPLES
    said = [w.word for c in quick for w in c.timing.words]
    assert said == [w.word for w in normal[0].timing.words]


@pytest.mark.parametrize("text", ["Sure, I can do that.", "Zebras have stripes.",
                                  "Paris is the capital of France.",
                                  # its first 25 ms frame above -40 dBFS is one after the onset
                                  # rule's: the cut keeps a quiet frame before the latter
                                  "Happy to help!"])
def test_tts_cutting_the_leading_silence_never_clips_the_voices_onset(engines, text):
    """Kokoro begins "Sure"'s hiss and "Zebras"' buzz inside its leading silence, before the
    first phoneme's frame: cut to 50 ms there, the reply would start mid-sound with a click."""
    words = engines.tts.g2p(text)
    whole = engines.tts.synthesize_words(words, "af_heart", 1.0)
    quick = engines.tts.synthesize_words(words, "af_heart", 1.0,
                                         max_lead_frames=QUICK_START_LEAD_FRAMES)
    cut = whole.durations[0] - quick.durations[0]
    assert cut > 0 and quick.durations[1:] == whole.durations[1:]
    assert len(quick.audio) == sum(quick.durations) * FRAME_SAMPLES
    # the same audio from the cut on (the model is deterministic), with a 5 ms fade-in
    np.testing.assert_allclose(quick.audio[FADE_IN_SAMPLES:],
                               whole.audio[cut * FRAME_SAMPLES + FADE_IN_SAMPLES:], atol=1e-6)
    # nothing the onset rule (the page's, 5 ms windows) hears as voice was dropped
    assert voice_onset_ms(whole.audio[:cut * FRAME_SAMPLES]) is None
    onset_frame = int(voice_onset_ms(whole.audio) // FRAME_MS)
    if onset_frame < whole.durations[0] - QUICK_START_LEAD_FRAMES:  # the voice starts early
        assert quick.durations[0] > QUICK_START_LEAD_FRAMES
        assert cut == onset_frame - 1  # one quiet frame before it is kept
    else:
        assert quick.durations[0] == QUICK_START_LEAD_FRAMES
    if text.startswith("Sure"):  # measured: its hiss starts 75 ms before a 50 ms cut
        assert quick.durations[0] > QUICK_START_LEAD_FRAMES


def test_tts_a_reply_starts_small_and_its_chunks_grow_with_what_was_made(engines):
    """The chunk sizes of one reply, over its sentences (one plan): the first short, each later
    one at most CHUNK_GROWTH x the phonemes made before it (plus a sentence's last few words,
    which never make a chunk of their own), cut at sentence or clause ends where there are."""
    plan = ChunkPlan()
    chunks = [g for sentence in SENTENCES + ["Neat!", "Cats sleep a lot."]
              for g in split_words(engines.tts.g2p(sentence), plan=plan)]
    sizes = [sum(len(w.phonemes) + 1 for w in g) for g in chunks]
    assert sizes[0] <= FIRST_CHUNK_TOKENS
    for k in range(1, len(sizes)):
        allowed = max(FIRST_CHUNK_TOKENS, int(CHUNK_GROWTH * sum(sizes[:k])))
        assert sizes[k] <= min(MAX_TOKENS, allowed) + FIRST_CLAUSE_TOKENS, (k, sizes)
    assert max(sizes) > 3 * sizes[0], sizes  # they grow
    ends = [g[-1].phonemes[-1] for g in chunks]
    assert sum(e in ".!?,;:" for e in ends) >= len(ends) - 2, [g[-1].text for g in chunks]
    assert [w.text for g in chunks for w in g] == [
        w.text for s in SENTENCES + ["Neat!", "Cats sleep a lot."] for w in engines.tts.g2p(s)]
    assert plan.made == len(chunks)


def _one_worker(tts: KokoroTTS) -> KokoroTTS:
    """The same model behind a queue of one synthesis at a time (TTS_WORKERS=1)."""
    return KokoroTTS(tts.backend, tts.vocab, tts.voices, tts.g2p, tts.default_voice, workers=1)


def test_tts_a_replys_first_chunk_goes_ahead_of_other_replys_later_chunks(engines):
    """Four replies under way (their later sentences: not a reply's start), then a new reply
    starts: its first chunk is made right after the chunk being made now, not after the chunks
    that were already waiting. One worker, so that the order is all the queue decides (with
    more, test_synthesis_queue_* below)."""
    tts = _one_worker(engines.tts)
    done: list[tuple[str, float]] = []
    first_out = threading.Event()

    def long_reply(name: str):
        for _chunk in tts.synthesize(" ".join(SENTENCES)):
            done.append((name, time.monotonic()))
            first_out.set()

    others = [threading.Thread(target=long_reply, args=(n,)) for n in ("a", "b", "c", "d")]
    for t in others:
        t.start()
    assert first_out.wait(60)
    time.sleep(0.2)  # the other replies' next chunks are queued by now
    asked = time.monotonic()
    first = next(iter(tts.synthesize("Hello there, how can I help?", quick_start=True)))
    answered = time.monotonic()
    for t in others:
        t.join(180)
    assert first.timing.words[0].word == "Hello"
    in_between = [name for name, t in done if asked < t < answered]
    # The chunk being made when it asked, and at most one more if that one ended while the new
    # reply was still turning its text into phonemes; a first-come queue lets all four go first.
    assert len(in_between) <= 2, (in_between, len(done))


def _take(queue: FirstChunksFirst, first: bool, order: list[str], name: str) -> threading.Thread:
    """A thread that waits for ``queue`` and notes ``name`` in ``order`` once it has a worker."""
    def run():
        assert queue.acquire(first)
        order.append(name)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_synthesis_queue_runs_as_many_at_once_as_it_has_workers():
    queue = FirstChunksFirst(slots=2)
    order: list[str] = []
    a, b = _take(queue, False, order, "a"), _take(queue, False, order, "b")
    a.join(5), b.join(5)
    assert sorted(order) == ["a", "b"]  # both at once: neither released
    c = _take(queue, False, order, "c")
    time.sleep(0.2)
    assert "c" not in order  # a third waits for a worker
    queue.release()
    c.join(5)
    assert order[-1] == "c"
    assert queue.stats.chunks == {"first": 0, "later": 3}
    assert queue.stats.wait_seconds["later"] >= 0.2  # c's wait, counted


def test_synthesis_queue_gives_a_freed_worker_to_a_first_chunk_before_earlier_later_ones():
    queue = FirstChunksFirst(slots=2)
    order: list[str] = []
    for name in ("busy 1", "busy 2"):
        _take(queue, False, order, name).join(5)
    waiting = [_take(queue, False, order, f"later {k}") for k in range(3)]
    _until(lambda: len(queue._waiting) == 3)
    first = _take(queue, True, order, "first")
    _until(lambda: len(queue._waiting) == 4)
    queue.release()
    first.join(5)
    assert order[2] == "first", order  # ahead of the three that asked before it
    for _ in range(3):
        queue.release()
    for t in waiting:
        t.join(5)
    assert order[3:] == ["later 0", "later 1", "later 2"]  # the rest in order of arrival
    assert queue.stats.chunks == {"first": 1, "later": 5}


def test_synthesis_queue_refuses_no_workers():
    with pytest.raises(ValueError, match="at least 1"):
        FirstChunksFirst(slots=0)


def test_tts_two_workers_synthesize_two_replies_at_once_as_one_would(engines):
    """TTS_WORKERS=2: two replies' chunks are made at the same time on the one model, and each
    is what the model makes alone (Kokoro is deterministic)."""
    running, most = 0, 0
    lock = threading.Lock()
    infer = engines.tts.backend.infer

    class Counting:
        def infer(self, *args):
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            try:
                return infer(*args)
            finally:
                with lock:
                    running -= 1

    tts = KokoroTTS(Counting(), engines.tts.vocab, engines.tts.voices, engines.tts.g2p,
                    engines.tts.default_voice, workers=2)
    texts = [" ".join(SENTENCES[:2]), " ".join(SENTENCES[1:3])]
    alone = [[c.audio for c in _one_worker(engines.tts).synthesize(t, quick_start=True)]
             for t in texts]
    together: list[list[np.ndarray]] = [[], []]

    def speak(k: int):
        together[k] = [c.audio for c in tts.synthesize(texts[k], quick_start=True)]

    threads = [threading.Thread(target=speak, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert most == 2
    for mine, theirs in zip(together, alone, strict=True):
        assert len(mine) == len(theirs) >= 2
        for x, y in zip(mine, theirs, strict=True):
            assert len(x) == len(y)
            assert np.max(np.abs(x - y)) < 1e-3
    assert tts.stats.chunks == {"first": 2, "later": sum(len(a) for a in alone) - 2}


def test_tts_counts_the_time_it_synthesized_and_the_audio_it_made(engines):
    """What /metrics reads to tell how busy Kokoro is and its real-time factor: each chunk's
    time in the model and the audio the model made (before the leading silence is cut), by
    kind, and nothing for a chunk cancelled before it ran."""
    made: list[tuple[bool, float, int]] = []
    infer = engines.tts.backend.infer

    class Timed:
        def infer(self, *args):
            began = time.monotonic()
            audio, durations = infer(*args)
            made.append((not made, time.monotonic() - began, len(audio)))
            return audio, durations

    tts = KokoroTTS(Timed(), engines.tts.vocab, engines.tts.voices, engines.tts.g2p,
                    engines.tts.default_voice)
    chunks = list(tts.synthesize(" ".join(SENTENCES[:2]), quick_start=True))
    cancel = threading.Event()
    cancel.set()
    assert list(tts.synthesize("Never made.", quick_start=True, cancel=cancel)) == []
    assert len(made) == len(chunks) >= 2
    stats = tts.stats
    for kind, first in (("first", True), ("later", False)):
        mine = [(s, n) for is_first, s, n in made if is_first == first]
        assert stats.audio_seconds[kind] == pytest.approx(sum(n for _, n in mine) / SAMPLE_RATE)
        # measured around the model's call: at least its time inside, and little more
        assert sum(s for s, _ in mine) <= stats.synthesis_seconds[kind] \
            <= sum(s for s, _ in mine) + 0.05 * len(mine)
    # the chunks handed on are that audio less its leading silence cut
    heard = sum(len(c.audio) for c in chunks) / SAMPLE_RATE
    assert heard <= sum(stats.audio_seconds.values()) < heard + 0.4 * len(chunks)


def test_tts_cancel_while_waiting_for_the_engine_makes_nothing(engines):
    cancel = threading.Event()
    cancel.set()
    assert list(engines.tts.synthesize("This is never spoken.", cancel=cancel)) == []


needs_vnni = pytest.mark.skipif(
    not cpu_has_vnni(), reason="the int8 matrix products are exact only with VNNI (without it "
    "onnxruntime's u8 x s8 kernel may saturate), so the engine keeps the registry graph there")


@needs_vnni
def test_tts_convolutions_as_vnni_matmuls_make_the_registry_graphs_audio_bit_for_bit(
        engines, settings):
    """TTS_VNNI_MATMUL (on by default): the engine runs Kokoro's convolutions as u8 x s8 matrix
    products, and every sample and duration is the registry graph's."""
    tts = engines.tts
    assert tts.backend.convs_rewritten == 83  # of 87: the four 1-channel ones stay
    registry = KokoroOnnxBackend(settings.models_dir / settings.profile.tts_model, threads=1,
                                 vnni_matmul=False)
    assert registry.convs_rewritten == 0
    as_downloaded = KokoroTTS(registry, tts.vocab, tts.voices, tts.g2p, tts.default_voice)
    for text in SENTENCES:
        for mine, theirs in zip(tts.synthesize(text), as_downloaded.synthesize(text), strict=True):
            assert mine.durations == theirs.durations
            assert len(mine.audio) == sum(mine.durations) * FRAME_SAMPLES
            assert np.array_equal(mine.audio, theirs.audio), text


@needs_vnni
@pytest.mark.parametrize("output_blocks", [True, False])
def test_tts_vnni_graph_with_or_without_output_blocks_is_the_registry_graph_bit_for_bit(
        engines, settings, output_blocks):
    """Both forms of the rewrite (the output's Transpose in blocks, for one thread, or whole):
    the same samples and durations as the registry graph, for a two-word reply (the text
    encoder's convolutions then have a few steps, one block) and a long sentence (the
    generator's, thousands of steps in many blocks, the last one padded)."""
    import onnx
    import onnxruntime as ort

    from stack.engines.kokoro_onnx import squares_as_products
    from stack.lipsync import build_tokens

    path = settings.models_dir / settings.profile.tts_model
    model = onnx.load(str(path))
    assert convs_as_matmuls(model, output_blocks=output_blocks) == 83
    assert squares_as_products(model) == 50  # the Snake activations' sin²
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    rewritten = ort.InferenceSession(model.SerializeToString(), opts,
                                     providers=["CPUExecutionProvider"])
    registry = KokoroOnnxBackend(path, threads=1, vnni_matmul=False)
    tts = engines.tts
    for text in ("Hi there.", SENTENCES[0] + " " + SENTENCES[1]):
        ids = build_tokens(tts.g2p(text), tts.vocab).ids
        style = tts.voices.style(tts.default_voice, len(ids) - 2)
        audio, durations = rewritten.run(["audio", "/encoder/Clip_output_0"], {
            "tokens": np.asarray([ids], np.int64), "style": style.reshape(1, 256),
            "speed": np.asarray([1.0], np.float32)})
        theirs = registry.infer(ids, style, 1.0)
        assert np.array_equal(durations.reshape(-1).astype(np.int64), theirs[1]), text
        assert np.array_equal(audio.reshape(-1), theirs[0]), text


@needs_vnni
def test_tts_vnni_graph_is_kept_beside_the_model_and_remade_when_the_model_changes(
        settings, tmp_path, monkeypatch, caplog):
    import shutil

    from stack.engines import kokoro_onnx

    model = tmp_path / "kokoro.durations.onnx"
    shutil.copy(settings.models_dir / settings.profile.tts_model, model)
    first = KokoroOnnxBackend(model, threads=1)
    kept, note = tmp_path / "kokoro.durations.vnni.onnx", tmp_path / "kokoro.durations.vnni.json"
    assert first.convs_rewritten == 83 and kept.is_file() and note.is_file()

    def no_rewrite(model, **options):
        raise AssertionError("rewritten again although kept")

    with monkeypatch.context() as m:  # a later start loads what was kept, as it is
        m.setattr(kokoro_onnx, "convs_as_matmuls", no_rewrite)
        again = KokoroOnnxBackend(model, threads=1)
    assert again.convs_rewritten == 83
    ids, style = [0, 50, 83, 54, 156, 57, 135, 0], np.zeros((1, 256), np.float32)
    for a, b in zip(first.infer(ids, style, 1.0), again.infer(ids, style, 1.0), strict=True):
        assert np.array_equal(a, b)
    assert json.loads(note.read_text())["made_from"]["output_blocks"] is True

    # two threads want the other form (no output blocks): made again, and kept instead
    assert KokoroOnnxBackend(model, threads=2).convs_rewritten == 83
    assert json.loads(note.read_text())["made_from"]["output_blocks"] is False

    os.utime(model, ns=(0, 0))  # the model replaced (a new download): made again from it
    made = kept.stat().st_mtime_ns
    assert KokoroOnnxBackend(model, threads=1).convs_rewritten == 83
    assert kept.stat().st_mtime_ns != made

    kept.write_bytes(b"not a graph")  # a damaged copy: said, and made again
    with caplog.at_level("WARNING", logger="stack.engines.kokoro_onnx"):
        repaired = KokoroOnnxBackend(model, threads=1)
    assert "did not load" in caplog.text and repaired.convs_rewritten == 83
    assert kept.stat().st_size > 10_000_000

    def read_only(path, data):  # the Compose bot's models volume: nothing kept, all works
        raise OSError(30, "Read-only file system", str(path))

    kept.unlink()
    note.unlink()
    monkeypatch.setattr(kokoro_onnx, "_write_atomically", read_only)
    assert KokoroOnnxBackend(model, threads=1).convs_rewritten == 83
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]


def _conv_graph(w: np.ndarray, w_zp: int, **attrs):
    """A one-node model: ConvInteger of a u8 input with constant u8 weights."""
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("ConvInteger", ["x", "w", "x_zp", "w_zp"], ["y"], name="conv",
                            kernel_shape=[w.shape[2]], **attrs)
    inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, w.shape[1], None]),
              helper.make_tensor_value_info("x_zp", TensorProto.UINT8, [])]
    weights = [numpy_helper.from_array(w, "w"),
               numpy_helper.from_array(np.array(np.uint8(w_zp)), "w_zp")]
    output = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    graph = helper.make_graph([node], "conv", inputs, [output], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@needs_vnni
@pytest.mark.parametrize("attrs", [
    {"pads": [5, 5]},  # kernel 11, as Kokoro's resblocks
    {"pads": [15, 15], "dilations": [3]},
    {"pads": [3, 3], "strides": [6]},  # as its noise convolution: stride 6, kernel 12
    {},  # no padding: the output is shorter than the input
])
def test_convs_as_matmuls_give_the_same_integers_as_the_convolution(attrs):
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    k = 12 if attrs.get("strides") else 11
    w = rng.integers(0, 256, (16, 24, k), dtype=np.uint8)  # the full range: worst for saturation
    x = rng.integers(0, 256, (1, 24, 301), dtype=np.uint8)
    x_zp = np.array(np.uint8(131))
    conv = _conv_graph(w, 127, **attrs)
    rewritten = _conv_graph(w, 127, **attrs)
    assert convs_as_matmuls(rewritten) == 1
    assert "ConvInteger" not in {n.op_type for n in rewritten.graph.node}
    assert "w" not in {i.name for i in rewritten.graph.initializer}  # the u8 weights are gone
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(None, {"x": x, "x_zp": x_zp})[0] for m in (conv, rewritten)]
    assert run[0].shape == run[1].shape
    assert np.array_equal(run[0], run[1])


def test_convs_as_matmuls_leave_grouped_and_tiny_convolutions_alone():
    rng = np.random.default_rng(1)
    grouped = _conv_graph(rng.integers(0, 256, (16, 12, 3), dtype=np.uint8), 128, group=2,
                          pads=[1, 1])
    tiny = _conv_graph(rng.integers(0, 256, (1, 24, 3), dtype=np.uint8), 128, pads=[1, 1])
    for model in (grouped, tiny):
        assert convs_as_matmuls(model) == 0
        assert [n.op_type for n in model.graph.node] == ["ConvInteger"]


@pytest.mark.parametrize(("flags", "vnni"), [
    ("fpu sse avx2 avx512f avx512_vnni avx512bw", True),
    ("fpu sse avx2 avx_vnni", True),
    ("fpu sse avx2 avx512f avx512bw", False),  # Skylake-SP: AVX-512 without VNNI
])
def test_vnni_is_read_from_the_cpus_flags(tmp_path, flags, vnni):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\n")
    assert cpu_has_vnni(cpuinfo) is vnni
    assert cpu_has_vnni(tmp_path / "absent") is False  # not Linux: the registry graph


def test_missing_model_files_name_the_file_and_the_fix(settings, tmp_path):
    from stack.engines.load import load_engines

    empty = settings.model_copy(update={"models_dir": tmp_path})
    with pytest.raises(FileNotFoundError) as err:
        load_engines(empty)
    message = str(err.value)
    assert str(tmp_path / "test" / "whisper-tiny.en" / "model.bin") in message
    assert f"download_models.py --profile test --models-dir {tmp_path}" in message
