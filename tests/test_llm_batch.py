"""The batched LLM engine (many conversations on one llama.cpp context) on the real test model,
checked against the one-at-a-time engine: same replies, independent cancellation, per-conversation
caches that make a second turn read only its new tokens."""

import threading

import jiwer
import pytest

from stack.config import Settings
from stack.engines.llm import LlamaLLM
from stack.engines.llm_batch import BatchedLlamaLLM

SYSTEM = {"role": "system", "content": Settings().system_prompt}
QUESTIONS = ["What is the capital of France?", "What colour is the sky on a clear day?",
             "How many legs does a dog have?", "What do bees make?",
             "What is the opposite of hot?", "Which animal says moo?"]


def _ask(question: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def model_path(settings):
    return settings.models_dir / settings.profile.llm_model


@pytest.fixture(scope="module")
def one_at_a_time(model_path):
    llm = LlamaLLM(model_path, device="cpu", n_ctx=2048)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def batched(model_path):
    llm = BatchedLlamaLLM(model_path, device="cpu", n_ctx=2048, parallel=4)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def reference(one_at_a_time):
    return [one_at_a_time.complete(_ask(q), max_tokens=32, temperature=0) for q in QUESTIONS]


def _together(llm, questions, **kw) -> list[str]:
    """Each question from its own thread, all at once."""
    out: list = [None] * len(questions)

    def ask(i: int) -> None:
        out[i] = llm.complete(_ask(questions[i]), max_tokens=32, temperature=0,
                              session=("together", i), **kw)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _same_replies(got: list, want: list) -> None:
    """Each reply is its question's one-at-a-time reply: the same opening words and at most a
    word in three different. Not to the letter: llama.cpp's sums depend on the batch's shape, and
    a near-tie in greedy decoding may then go the other way (a CI run: "a brilliant blue" against
    "a brilliant shade of blue"). Another conversation's reply, or a corrupted cache's, fails."""
    assert len(got) == len(want), got
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, str) and g.split()[:4] == w.split()[:4], (g, w)
        assert jiwer.wer(w, g) <= 0.34, (g, w)


def test_concurrent_replies_are_the_replies_given_one_at_a_time(batched, reference):
    steps = batched.stats.steps
    generated = batched.stats.generated_tokens
    answers = _together(batched, QUESTIONS[:4])
    _same_replies(answers, reference[:4])
    assert "Paris" in answers[0]
    # and they were decoded together: fewer steps than tokens
    assert batched.stats.steps - steps < batched.stats.generated_tokens - generated


def test_more_conversations_than_sequences_wait_their_turn(batched, reference):
    waits = len(batched.stats.queue_waits)
    _same_replies(_together(batched, QUESTIONS), reference)  # six people, four sequences
    assert len(batched.stats.queue_waits) - waits == len(QUESTIONS)


def test_cancelling_one_conversation_leaves_the_others_whole(batched, reference):
    cancel = threading.Event()
    story: list[str] = []
    others: list = [None] * 3

    def tell() -> None:
        long = [SYSTEM, {"role": "user", "content": "Write a very long story about a dragon."}]
        for piece in batched.stream(long, max_tokens=400, temperature=0, cancel=cancel,
                                    session="story"):
            story.append(piece)
            if len(story) == 5:
                cancel.set()

    def ask(i: int) -> None:
        others[i] = batched.complete(_ask(QUESTIONS[i]), max_tokens=32, temperature=0,
                                     session=("other", i))

    threads = [threading.Thread(target=tell)] + [
        threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(story) == 5  # nothing after the cancel
    _same_replies(others, reference[:3])


def test_a_consumer_that_stops_reading_frees_its_sequence(batched, reference):
    stream = batched.stream(_ask("Count from 1 to 300."), max_tokens=600, temperature=0)
    next(stream)
    stream.close()  # the caller walks away (as a cancelled Pipecat task does)
    # all four sequences serve others at once again
    _same_replies(_together(batched, QUESTIONS[:4]), reference[:4])


def test_a_second_turn_reads_only_its_new_tokens(batched):
    history = _ask("What is the capital of France?")
    reply = batched.complete(history, max_tokens=24, temperature=0, session="turns")
    first_prompt = batched.last_prompt_tokens
    assert batched.last_prefilled_tokens <= first_prompt
    history += [{"role": "assistant", "content": reply},
                {"role": "user", "content": "And of Italy?"}]
    batched.complete(history, max_tokens=24, temperature=0, session="turns")
    # the first turn (prompt and reply) was still cached: only the new message was read
    assert batched.last_prefilled_tokens < batched.last_prompt_tokens - first_prompt
    assert batched.last_prefilled_tokens < 24


def test_a_closed_engine_says_so(model_path):
    llm = BatchedLlamaLLM(model_path, device="cpu", n_ctx=512, parallel=1)
    assert "Paris" in llm.complete(_ask(QUESTIONS[0]), max_tokens=16, temperature=0)
    llm.close()
    with pytest.raises(RuntimeError, match="closed"):
        llm.complete(_ask(QUESTIONS[0]), max_tokens=16)


def test_llm_parallel_picks_the_engine(settings):
    assert settings.llm_sequences == 4  # the test profile's default
    assert Settings(model_profile="cpu", _env_file=None).llm_sequences == 2
    assert Settings(model_profile="gpu", llm_parallel=1, _env_file=None).llm_sequences == 1
