"""Chat LLM with llama.cpp (llama-cpp-python), streaming, cancellable (barge-in), and a token
budget so a conversation never outgrows the context window.

The prompt is rendered with the GGUF's own chat template and tokenized here, exactly as
llama-cpp-python's chat completion would, so the budget counts the very tokens the model gets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .device import resolve_device

REFILL = 0.25  # when the window is full, free this share of it at once (see LlamaLLM.fit)


@dataclass
class EngineStats:
    """Counters since the engine started (read by the benchmarks and /metrics). The
    one-at-a-time engine counts a step per token and its prompt tokens as read."""

    steps: int = 0  # llama_decode calls
    generated_tokens: int = 0
    prefilled_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens found already cached in the sequence
    batch_sequences: int = 0  # sum over steps of the sequences in the step's batch
    decode_seconds: float = 0.0
    admitted: int = 0  # requests given a sequence
    queue_seconds: float = 0.0  # their waits for one, summed
    queue_waits: list[float] = field(default_factory=list)  # submit → admitted, seconds (last 1000)

    def admit(self, waited: float) -> None:
        """A generation starts after waiting ``waited`` seconds for the engine."""
        self.admitted += 1
        self.queue_seconds += waited
        self.queue_waits.append(waited)
        del self.queue_waits[:-1000]


class LlamaLLM:
    """One GGUF model; ``stream(messages)`` yields text pieces using the GGUF's chat template.

    Generations run one at a time (a llama.cpp context is not re-entrant); ``cancel()`` or the
    ``cancel`` event passed to ``stream`` stops a running one before its next token.

    A conversation longer than the window is fitted (``fit``) before it is rendered: the
    system prompt stays, the oldest turns are dropped, and a single user message too long on
    its own keeps its end. Dropping rather than summarising: a summary costs a second
    generation (seconds on a CPU) right when the person waits for an answer, and a small
    model's summary loses or invents facts; the window of a 4096-token context still holds
    dozens of spoken turns."""

    def __init__(self, model_path: Path, *, device: str = "auto", n_ctx: int = 4096,
                 threads: int | None = None, seed: int = 0, own_context: bool = True):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not Path(model_path).is_file():
            raise FileNotFoundError(f"{model_path} is missing; fetch it with "
                                    "python scripts/download_models.py")
        self.device = resolve_device(device)
        self.model = Llama(
            model_path=str(model_path),
            # A subclass that decodes on a context of its own keeps this one token-sized.
            n_ctx=n_ctx if own_context else 64,
            n_gpu_layers=-1 if self.device == "cuda" else 0,  # all layers on the GPU if any
            n_threads=threads,
            seed=seed,
            verbose=False,
        )
        template = self.model.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{model_path} has no chat template (tokenizer.chat_template); "
                             "use an instruction-tuned GGUF that carries one")
        def text_of(token: int) -> str:
            return self.model._model.token_get_text(token) if token != -1 else ""

        eos = self.model.token_eos()
        # The same formatter llama-cpp-python builds for create_chat_completion.
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=text_of(eos),
                                              bos_token=text_of(self.model.token_bos()),
                                              stop_token_ids=[eos])
        self.n_ctx = n_ctx  # per conversation: what ``fit`` budgets for
        self.seed = seed
        self.last_prompt_tokens = 0  # of the latest generation: what the budget allowed
        self.stats = EngineStats()
        self._lock = threading.Lock()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    # --- the token budget ---------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _render(self, messages: list[dict]):
        """The chat template applied to ``messages`` (with its stop rules), and its tokens."""
        rendered = self._formatter(messages=messages)
        return rendered, self.model.tokenize(rendered.prompt.encode("utf-8"),
                                             add_bos=not rendered.added_special, special=True)

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The tokens the model is given for ``messages`` (template, special tokens and the
        assistant's opening included)."""
        return self._render(messages)[1]

    def fit(self, messages: list[dict], max_tokens: int, *,
            keep_from: int = 0) -> tuple[list[dict], int]:
        """``messages`` cut to fit the window with room for ``max_tokens`` of reply: system
        messages stay, the oldest other messages go first (the kept ones start with a user
        message), and a last user message too long on its own keeps its end.

        Returns the messages and where the kept history starts among the non-system ones; pass
        that back as ``keep_from`` for the conversation's next turn. The cut only moves when it
        must, and then far enough to free a quarter of the window (``REFILL``): the start of
        the prompt stays the same for many turns, so llama.cpp reuses its cache for it instead of
        reading the whole window again every turn (26 s a turn on 2 cores with the test model)."""
        budget = self.n_ctx - max_tokens
        system = [m for m in messages if m["role"] == "system"]
        rest = [m for m in messages if m["role"] != "system"]
        over = ValueError(f"the system prompt alone is over the budget of {budget} tokens "
                          "(LLM_CONTEXT_TOKENS - LLM_MAX_TOKENS)")
        if not rest:
            if len(self.prompt_tokens(system)) > budget:
                raise over
            return messages, 0

        def size(start: int) -> int:
            return len(self.prompt_tokens(system + rest[start:]))

        def user_first(start: int) -> int:  # chat templates want the history to open with a user
            while start < len(rest) - 1 and rest[start]["role"] != "user":
                start += 1
            return start

        start = user_first(min(keep_from, len(rest) - 1))
        if size(start) <= budget:
            return (messages if start == 0 else system + rest[start:]), start
        last = len(rest) - 1
        if size(last) <= budget:
            target = int(budget * (1 - REFILL))
            limit = target if size(last) <= target else budget
            lo, hi = start, last  # the first start at or after the old one that fits the limit
            while lo < hi:  # fewer messages never need more tokens: bisect
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if size(mid) <= limit else (mid + 1, hi)
            start = user_first(lo)
            return system + rest[start:], start
        message = rest[last]
        overhead = len(self.prompt_tokens(system + [{**message, "content": ""}]))
        tokens = self.tokenize(message["content"])
        keep = max(0, budget - overhead - 8)  # 8: joins between pieces can tokenize longer
        while True:
            text = self.model.detokenize(tokens[len(tokens) - keep:] if keep else []).decode(
                "utf-8", errors="ignore")
            shortened = system + [{**message, "content": text}]
            if len(self.prompt_tokens(shortened)) <= budget:
                return shortened, last
            if keep == 0:  # not even an empty message fits: never send an over-budget prompt
                raise over
            keep = max(0, keep - 16)

    # --- generation ---------------------------------------------------------------------

    def stream(self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.7,
               repeat_penalty: float = 1.0, cancel: threading.Event | None = None,
               session: object = None) -> Iterator[str]:
        """The reply to ``messages`` (fitted to the window first), piece by piece. ``session``
        names the conversation; this engine keeps one cache for all of them and ignores it."""
        rendered, prompt = self._render(self.fit(messages, max_tokens)[0])
        submitted = time.monotonic()
        with self._lock:
            stats = self.stats
            stats.admit(time.monotonic() - submitted)
            self._cancel.clear()
            self.last_prompt_tokens = len(prompt)
            stats.prefilled_tokens += len(prompt)  # llama-cpp-python may reuse some: not told
            chunks = self.model.create_completion(
                prompt, stream=True, max_tokens=max_tokens, temperature=temperature,
                repeat_penalty=repeat_penalty, stop=rendered.stop,
                stopping_criteria=rendered.stopping_criteria)
            try:
                while True:
                    started = time.perf_counter()
                    chunk = next(chunks, None)
                    stats.decode_seconds += time.perf_counter() - started
                    if chunk is None:
                        break
                    stats.steps += 1
                    stats.batch_sequences += 1
                    stats.generated_tokens += 1
                    if self._cancel.is_set() or (cancel is not None and cancel.is_set()):
                        break
                    piece = chunk["choices"][0]["text"]
                    if piece:
                        yield piece
            finally:
                chunks.close()  # stops llama.cpp generating the rest

    def complete(self, messages: list[dict], **kw) -> str:
        return "".join(self.stream(messages, **kw))

    def release(self, session: object) -> None:
        """The conversation ``session`` has ended (nothing to free here: one shared cache)."""

    def close(self) -> None:
        self.model.close()
