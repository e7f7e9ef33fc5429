"""STT -> LLM -> TTS as one Pipecat pipeline, headless (Pipecat's test runner), on beckett.wav."""

import asyncio
import dataclasses
import os
import re
import threading
import time
from collections import defaultdict

import numpy as np
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMMessagesAppendFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TextAggregationMode
from pipecat.tests.utils import QueuedFrameProcessor, SleepFrame, run_test
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.workers.runner import WorkerRunner

from stack.pipeline import build_pipeline
from stack.protocol import MESSAGE_ADAPTER, SpeechChunkMessage
from stack.services.threaded import call_in_thread, iterate_in_thread
from stack.services.tts import LONG_SENTENCE_WORDS, ReplyStartAggregator

CHUNK = 320  # 20 ms at 16 kHz, what a transport delivers


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", "", text.lower()).split()


def typed(text: str) -> LLMMessagesAppendFrame:
    """What Pipecat's RTVI processor makes of a send-text message: a user message that runs the
    LLM."""
    return LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)


def _mic(audio: np.ndarray, trailing_s: float):
    pcm = (np.concatenate([np.zeros(8000, np.float32), audio,
                           np.zeros(int(16000 * trailing_s), np.float32)]) * 32767).astype(np.int16)
    frames = []
    for i in range(0, len(pcm), CHUNK):  # paced like a real microphone
        frames += [InputAudioRawFrame(pcm[i:i + CHUNK].tobytes(), 16000, 1), SleepFrame(0.02)]
    return frames


async def test_pipeline_answers_beckett_with_audio_and_exact_timings(engines, settings, beckett):
    conversation = build_pipeline(engines, settings)
    down, _ = await run_test(conversation.pipeline,
                             frames_to_send=_mic(beckett, 4.0) + [SleepFrame(8.0)])

    history = conversation.context.get_messages()
    heard = " ".join(m["content"] for m in history if m["role"] == "user").lower()
    assert "ever tried" in heard and "fail better" in heard

    audio = defaultdict(int)
    messages = defaultdict(list)
    stopped = {}  # turn -> None, in the order the turns stopped (a set has no order)
    for f in down:
        if isinstance(f, TTSAudioRawFrame):
            assert f.sample_rate == 24000
            audio[f.context_id] += len(f.audio) // 2
            assert messages[f.context_id], "timing message must come before its audio"
        elif isinstance(f, OutputTransportMessageFrame):
            msg = MESSAGE_ADAPTER.validate_python(f.message)
            assert isinstance(msg, SpeechChunkMessage)
            messages[msg.turn_id].append(msg)
        elif isinstance(f, TTSStoppedFrame):
            stopped[f.context_id] = None

    finished = [t for t in stopped if audio[t]]
    assert finished, "the bot answered at least once to the end"
    # each answer's playback gaps are recorded (its voice stopped: Kokoro behind playback)
    assert len(conversation.tts.gaps_s) >= len(finished) and min(conversation.tts.gaps_s) >= 0
    for turn in finished:
        msgs = messages[turn]
        assert [m.seq for m in msgs] == list(range(len(msgs)))
        assert sum(m.samples for m in msgs) == audio[turn]  # timings describe exactly the audio
        offset = 0
        for m in msgs:
            assert m.offset_ms == round(offset * 1000 / 24000, 1)
            assert m.duration_ms == round(m.samples * 1000 / 24000, 1)
            assert m.wtimes and m.wtimes[-1] + m.wdurations[-1] <= m.duration_ms
            assert abs(sum(m.vdurations) - m.duration_ms) < 1
            offset += m.samples

    # the history ends with what the bot actually said, word for word
    assert history[-1]["role"] == "assistant"
    spoken = " ".join(w for m in messages[finished[-1]] for w in m.words)
    assert _words(history[-1]["content"]) == _words(spoken)


class SlowWhisper:
    """The real Whisper engine, slowed down by a real delay before every segment: a CPU busy
    with a browser and other conversations (2.6-3.7 s per segment were seen in a browser on the
    test machine; this is slower still, and slower than Pipecat's 5 s user-turn stop timeout)."""

    def __init__(self, engine, delay_s: float):
        self.engine, self.delay_s, self.language = engine, delay_s, engine.language

    def transcribe(self, audio, **kw):
        time.sleep(self.delay_s)
        return self.engine.transcribe(audio, **kw)


async def test_stt_slower_than_speech_answers_each_question_once_and_never_cuts_itself_off(
        engines, settings, beckett):
    """Two phrases, each transcribed 6 s after it ends: the turn waits for both transcripts,
    the reply is about both, and no late transcript starts a turn that interrupts the reply."""
    slow = dataclasses.replace(engines, stt=SlowWhisper(engines.stt, 6.0))
    conversation = build_pipeline(slow, settings)
    question = beckett[: int(16000 * 3.0)]  # "Ever tried. Ever failed." (two VAD segments)
    down, _ = await run_test(conversation.pipeline,
                             frames_to_send=_mic(question, 24.0) + [SleepFrame(2.0)])

    history = conversation.context.get_messages()
    users = [m["content"] for m in history if m["role"] == "user"]
    assert len(users) == 1, users  # one turn, with both phrases in it
    assert "tried" in users[0].lower() and "failed" in users[0].lower(), users
    assert len([m for m in history if m["role"] == "assistant"]) == 1, history
    assert len([f for f in down if isinstance(f, UserStartedSpeakingFrame)]) == 1  # one turn
    stops = [f.message for f in down if isinstance(f, OutputTransportMessageUrgentFrame)
             and f.message.get("type") == "speech.stop"]
    assert not stops, stops
    spoken = {f.context_id for f in down if isinstance(f, TTSAudioRawFrame)}
    assert len(spoken) == 1 and spoken <= {f.context_id for f in down
                                           if isinstance(f, TTSStoppedFrame)}


class Silent:
    """The real LLM engine, except that its first generation says nothing (a model that
    returns an empty completion)."""

    def __init__(self, engine):
        self.engine, self.calls = engine, 0

    def fit(self, messages, max_tokens, **kw):
        return self.engine.fit(messages, max_tokens, **kw)

    def stream(self, messages, **kw):
        self.calls += 1
        return iter(()) if self.calls == 1 else self.engine.stream(messages, **kw)


async def test_an_empty_reply_is_an_apology_and_an_error_and_the_next_turn_works(
        engines, settings, beckett):
    from stack.services.llm import APOLOGY, EMPTY_REPLY

    conversation = build_pipeline(dataclasses.replace(engines, llm=Silent(engines.llm)), settings)
    phrase = beckett[: int(16000 * 1.1)]  # "Ever tried."
    down, up = await run_test(conversation.pipeline,
                              frames_to_send=_mic(phrase, 7.0) + _mic(phrase, 7.0))
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert errors == [EMPTY_REPLY], errors  # what the page is told (an RTVI error message)
    turns = defaultdict(list)
    for f in down:
        if isinstance(f, OutputTransportMessageFrame) and f.message.get("type") == "speech.chunk":
            turns[f.message["turn_id"]] += f.message["words"]
    said = [" ".join(words) for words in turns.values()]
    assert len(said) == 2 and _words(said[0]) == _words(APOLOGY), said  # heard, not silence
    assert _words(said[1]) and _words(said[1]) != _words(APOLOGY)  # the next turn is answered


async def test_typed_text_is_answered_aloud_and_an_overlong_one_is_refused_with_a_reason(
        engines, settings):
    from stack.protocol import CHAT_MAX_CHARS

    conversation = build_pipeline(engines, settings)
    down, up = await run_test(conversation.pipeline, frames_to_send=[
        typed("x" * (CHAT_MAX_CHARS + 1)), SleepFrame(1.0),
        typed("What is the capital of France?"), SleepFrame(8.0)])
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert errors == [f"typed message too long ({CHAT_MAX_CHARS + 1} characters; at most "
                      f"{CHAT_MAX_CHARS})"], errors
    users = [m["content"] for m in conversation.context.get_messages() if m["role"] == "user"]
    assert users == ["What is the capital of France?"]  # the refused one never reached the LLM
    said = [w for f in down if isinstance(f, OutputTransportMessageFrame)
            and f.message.get("type") == "speech.chunk" for w in f.message["words"]]
    assert "paris" in _words(" ".join(said)), said
    assert sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) > 24000 * 2


async def test_a_voice_picked_in_the_page_speaks_from_the_next_reply_and_a_bad_one_is_refused(
        engines, settings):
    from pipecat.processors.frameworks.rtvi import RTVIClientMessageFrame

    from stack.protocol import SET_VOICE

    def pick(voice) -> RTVIClientMessageFrame:  # what RTVI makes of the page's client message
        return RTVIClientMessageFrame(msg_id="v", type=SET_VOICE, data={"voice": voice})

    conversation = build_pipeline(engines, settings)
    down, up = await run_test(conversation.pipeline, frames_to_send=[
        typed("What is the capital of France?"), SleepFrame(7.0),
        pick("nobody"), pick("bf_emma"), SleepFrame(0.5),
        typed("Why is the sky blue?"), SleepFrame(8.0)])
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and "unknown voice 'nobody'" in errors[0] and "bf_emma" in errors[0]
    turns: dict[str, set] = defaultdict(set)
    for f in down:
        if isinstance(f, OutputTransportMessageFrame) and f.message.get("type") == "speech.chunk":
            turns[f.message["turn_id"]].add(f.message["voice"])
    assert list(turns.values()) == [{"af_heart"}, {"bf_emma"}], turns


async def _aggregate(aggregator, reply: str) -> list[str]:
    """What the TTS service would speak, in order, for a reply streamed as an LLM does: words
    with their space in front, punctuation on its own."""
    out = []
    for token in re.findall(r" ?\w+|[^\w ]", reply):
        async for a in aggregator.aggregate(token):
            out.append(a.text)
    rest = await aggregator.flush()
    return out + ([rest.text] if rest else [])


async def test_a_replys_first_words_go_to_speech_before_its_first_sentence_ends():
    aggregator = ReplyStartAggregator(aggregation_type=TextAggregationMode.SENTENCE)
    # at the first clause end past three words; then whole sentences
    assert await _aggregate(aggregator, "Well, that is nice, and I am happy. Cats sleep a lot."
                            ) == ["Well, that is nice,", "and I am happy.", "Cats sleep a lot."]
    # no clause end: after six words; a new reply (after the flush) starts early again
    assert await _aggregate(aggregator, "Cats have a special organ called the Jacobson organ. "
                            "Neat!") == ["Cats have a special organ called",
                                         "the Jacobson organ.", "Neat!"]
    # a short first sentence is a sentence; text with a possible sentence end is never cut early
    assert await _aggregate(aggregator, "Sure! I can help with that.") == [
        "Sure!", "I can help with that."]
    assert await _aggregate(aggregator, "It is 3.5 km from the big old station.") == [
        "It is 3.5 km from the big old station."]
    assert await _aggregate(aggregator, "It costs 3,000 dollars, I think.") == [
        "It costs 3,000 dollars,", "I think."]
    # an interruption starts a new reply
    async for _ in aggregator.aggregate("Cats sleep a lot, and"):
        pass
    await aggregator.handle_interruption()
    assert await _aggregate(aggregator, "Dogs bark at night, mostly.") == [
        "Dogs bark at night,", "mostly."]


async def test_a_long_sentence_goes_to_speech_a_clause_at_a_time():
    """Past LONG_SENTENCE_WORDS words a sentence still open goes at its last clause end, or whole
    without one; shorter sentences wait for their end (the test model once went "fail better,
    better, better, ..." to its token limit, and the voice stopped after the first clause until
    the LLM was done)."""
    aggregator = ReplyStartAggregator(aggregation_type=TextAggregationMode.SENTENCE)
    long = ", ".join(["better"] * 40) + "."
    spoken = await _aggregate(aggregator, "fail better, " + long)
    assert spoken[0] == "fail better, better,"
    assert all(len(s.split()) <= LONG_SENTENCE_WORDS for s in spoken)
    assert len(spoken) >= 40 // LONG_SENTENCE_WORDS + 1
    assert " ".join(spoken).split() == ("fail better, " + long).split()
    # a reply's later long sentence with no clause end: whole, at LONG_SENTENCE_WORDS words
    words = [f"w{i}" for i in range(LONG_SENTENCE_WORDS + 4)]
    assert await _aggregate(aggregator, "Yes. " + " ".join(words) + ".") == [
        "Yes.", " ".join(words[:LONG_SENTENCE_WORDS]), " ".join(words[LONG_SENTENCE_WORDS:]) + "."]
    # one clause short of the limit: a sentence as before
    short = "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, thirteen."
    assert await _aggregate(aggregator, "Well. " + short) == ["Well.", short]


async def test_model_calls_leave_the_event_loops_default_executor_free():
    """Conversations' model calls (waiting for an engine's lock, or running for seconds) must
    not hold asyncio's default executor: aiortc encodes each 10 ms of the bot's voice there
    (SmallWebRTC), and it has only cpu count + 4 threads."""
    loop = asyncio.get_running_loop()
    held = threading.Event()

    def waiting_for_an_engine(stop):
        held.wait(10)
        yield "done"

    async def first(stream):
        async for item in stream:
            return item

    calls = [asyncio.create_task(first(iterate_in_thread(waiting_for_an_engine)))
             for _ in range((os.cpu_count() or 1) + 8)]
    calls.append(asyncio.create_task(call_in_thread(held.wait, 10)))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await asyncio.wait_for(loop.run_in_executor(None, lambda: None), 5)  # an encoding's hop
    assert time.monotonic() - started < 1.0
    held.set()
    assert await asyncio.gather(*calls) == ["done"] * (len(calls) - 1) + [True]


class WordAtInterruption(FrameProcessor):
    """Stands where the output transport stands and does what its clock sometimes does: a word
    of the reply being spoken, made with its audio and held until its time to be heard, leaves
    just as the interruption arrives, and both reach the assistant aggregator's queue together.
    The interruption, a system frame, is taken out of that queue first."""

    def __init__(self):
        super().__init__()
        self.speaking: str | None = None  # the context of the audio passing through
        self.audio = asyncio.Event()
        self._held: TTSTextFrame | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and self._held is None:
            self.speaking = frame.context_id
            self._held = TTSTextFrame("Meanwhile", TextType.WORD, context_id=frame.context_id)
            self.audio.set()
        elif isinstance(frame, InterruptionFrame) and self._held is not None:
            await self.push_frame(self._held)
        await self.push_frame(frame, direction)


async def test_a_word_of_an_interrupted_reply_never_starts_the_next_reply_in_the_context(
        engines, settings):
    late = WordAtInterruption()
    conversation = build_pipeline(engines, settings, transport_output=late)
    received: asyncio.Queue = asyncio.Queue()
    worker = PipelineWorker(Pipeline([
        conversation.pipeline, QueuedFrameProcessor(queue=received, ignore_start=True,
                                                    queue_direction=FrameDirection.DOWNSTREAM)]),
        cancel_on_idle_timeout=False)

    def assistant() -> list[str]:
        return [m["content"] for m in conversation.context.get_messages()
                if m["role"] == "assistant"]

    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    async def drive():
        await asyncio.wait_for(started.wait(), 10)
        await worker.queue_frame(typed("Tell me about the history of Paris."))
        await asyncio.wait_for(late.audio.wait(), 60)  # the first reply is being spoken
        interrupted = late.speaking
        await worker.queue_frame(InterruptionFrame())
        await worker.queue_frame(typed("What is the capital of France?"))
        deadline = time.monotonic() + 60
        while len(assistant()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await worker.queue_frame(EndFrame())
        return interrupted

    runner = WorkerRunner()
    await runner.add_workers(worker)
    _, interrupted = await asyncio.gather(runner.run(), drive())
    frames = []
    while not received.empty():
        frames.append(received.get_nowait())
    spoken: dict[str, list[str]] = defaultdict(list)
    for f in frames:
        if isinstance(f, OutputTransportMessageFrame) and f.message.get("type") == "speech.chunk":
            spoken[f.message["turn_id"]] += f.message["words"]
    said = assistant()
    assert len(said) == 2 and len(spoken) == 2, (conversation.context.get_messages(), spoken)
    second = next(t for t in spoken if t != interrupted)
    # the second reply's message is what it said, word for word, and nothing before it
    assert _words(said[1]) == _words(" ".join(spoken[second])), said
    # the interrupted reply's message is a start of what it said, without the late word
    assert _words(said[0]) == _words(" ".join(spoken[interrupted]))[: len(_words(said[0]))], said


class Looping:
    """An LLM engine that falls into a loop, as the test model sometimes does ("fail better,
    better, better, ..." to its token limit), here without end: only the cancel stops it."""

    def __init__(self):
        self.cancelled = threading.Event()
        self.tokens = 0

    def fit(self, messages, max_tokens, **kw):
        return messages, 0

    def stream(self, messages, *, cancel, **kw):
        yield "Fail"
        while not cancel.is_set():
            self.tokens += 1
            yield " better,"
            time.sleep(0.01)
        self.cancelled.set()


def test_repeating_tail_finds_a_loop_not_emphasis():
    from stack.services.llm import repeating_tail

    assert repeating_tail("Fail better," + " better," * 7) == "better"
    assert repeating_tail("Fail better," + " better," * 6) is None  # not 8 words yet
    assert repeating_tail("No, no, no, no.") is None  # emphasis
    assert repeating_tail("Yes, please. " * 4) == "yes please"
    assert repeating_tail("Yes, please. " * 3) is None
    assert repeating_tail("I think so. " * 3) == "i think so"
    assert repeating_tail("I think so. " * 2) is None
    # a story's sentence told again word for word (the test model's, four times over)
    story = "Kova, a friendly robot, lived in a small town and loved to assist a human. "
    assert repeating_tail("Once upon a time. " + story * 2) == story.lower().replace(",", "")[:-2]
    assert repeating_tail("Once upon a time. " + story) is None
    assert repeating_tail("one two three four five six seven eight nine ten") is None
    assert repeating_tail("") is None


def _spoken_of(pieces: list[str]) -> tuple[str, bool]:
    """What the LLM service lets go on to be spoken of a token stream (its ``ReplyText``), and
    whether it was cut as a loop."""
    from stack.services.llm import ReplyText

    reply, spoken = ReplyText(), ""
    for piece in pieces:
        spoken += reply.add(piece)
        if reply.loop is not None:
            return spoken, True
    return spoken + reply.end(), False


def test_words_that_may_start_a_loop_are_held_back_until_it_is_clear():
    story = "Kova, a friendly robot, lived in a small town and loved to assist a human. "
    tokens = [t for t in re.split(r"(?= )", "Once upon a time. " + story * 4) if t]
    # the loop's second copy is not spoken: its first word went before it was a repeat
    assert _spoken_of(tokens) == ("Once upon a time. " + story + "Kova,", True)
    assert _spoken_of(["I", " think", " so", ". "] * 3) == ("I think so. I", True)
    # repeats that end are spoken whole: a word or phrase said twice, a word in two tokens
    for text in ["The cat sat on the mat and the dog sat on the rug.", "Yes, please. Yes, please.",
                 "He had had enough. Very very good."]:
        assert _spoken_of([t for t in re.split(r"(?= )", text) if t]) == (text, False)
    assert _spoken_of(["bet", "ter", " bet", "ter", " fine."]) == ("better better fine.", False)
    # what repeats nothing goes on at once, to the next sentence's first letter (which tells
    # Pipecat's sentence aggregator that the sentence before has ended)
    from stack.services.llm import speakable

    assert speakable("Hello world. Th") == len("Hello world. Th")
    assert speakable("Yes, please. Yes, please") == len("Yes, please. ")


async def test_an_answer_stuck_in_a_loop_is_cut_short_and_the_engine_stopped(engines, settings):
    from stack import metrics

    engine = Looping()
    before = metrics.REGISTRY.get_sample_value("avatar_llm_loops_total") or 0
    conversation = build_pipeline(dataclasses.replace(engines, llm=engine), settings)
    down, _ = await run_test(conversation.pipeline,
                             frames_to_send=[typed("What should I do?"), SleepFrame(6.0)])
    assert engine.cancelled.wait(5), "the engine was never told to stop"
    reply = [m["content"] for m in conversation.context.get_messages()
             if m["role"] == "assistant"]
    # the repeats were held back from the second "better" on, and never spoken
    assert len(reply) == 1 and _words(reply[0]) == ["fail", "better"], reply
    assert engine.tokens < 20, engine.tokens  # it stopped at the cut, not later
    assert metrics.REGISTRY.get_sample_value("avatar_llm_loops_total") == before + 1
    spoken = [w for f in down if isinstance(f, OutputTransportMessageFrame)
              and f.message.get("type") == "speech.chunk" for w in f.message["words"]]
    assert _words(" ".join(spoken)) == _words(reply[0])  # what it said is what was recorded
