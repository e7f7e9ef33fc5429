"""Chat LLM with llama.cpp (llama-cpp-python), streaming, cancellable (barge-in), and a token
budget so a conversation never outgrows the context window.

The prompt is rendered with the GGUF's own chat template and tokenized here, exactly as
llama-cpp-python's chat completion would, so the budget counts the very tokens the model gets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from .device import resolve_device


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
                 threads: int | None = None, seed: int = 0):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not Path(model_path).is_file():
            raise FileNotFoundError(f"{model_path} is missing; fetch it with "
                                    "python scripts/download_models.py")
        self.device = resolve_device(device)
        self.model = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_gpu_layers=-1 if self.device == "cuda" else 0,  # all layers on the GPU when there is one
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
        self.n_ctx = n_ctx
        self.last_prompt_tokens = 0  # of the latest generation: what the budget allowed
        self._lock = threading.Lock()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    # --- the token budget ---------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The tokens the model is given for ``messages`` (template, special tokens and the
        assistant's opening included)."""
        rendered = self._formatter(messages=messages)
        return self.model.tokenize(rendered.prompt.encode("utf-8"),
                                   add_bos=not rendered.added_special, special=True)

    def fit(self, messages: list[dict], max_tokens: int) -> list[dict]:
        """``messages`` cut to fit the window with room for ``max_tokens`` of reply: system
        messages stay, the oldest other messages go first (the kept ones start with a user
        message), and a last user message too long on its own keeps its end."""
        budget = self.n_ctx - max_tokens
        if len(self.prompt_tokens(messages)) <= budget:
            return messages
        system = [m for m in messages if m["role"] == "system"]
        rest = [m for m in messages if m["role"] != "system"]
        if not rest:
            raise ValueError(f"the system prompt alone is over the budget of {budget} tokens "
                             "(LLM_CONTEXT_TOKENS - LLM_MAX_TOKENS)")

        def fits(start: int) -> bool:
            return len(self.prompt_tokens(system + rest[start:])) <= budget

        lo, hi = 0, len(rest) - 1  # the first start that fits, if any but the last does
        if fits(hi):
            while lo < hi:  # fewer messages never need more tokens: bisect
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
            kept = rest[lo:]
            while len(kept) > 1 and kept[0]["role"] != "user":  # templates want user first
                kept = kept[1:]
            return system + kept
        last = rest[-1]
        overhead = len(self.prompt_tokens(system + [{**last, "content": ""}]))
        tokens = self.tokenize(last["content"])
        keep = max(0, budget - overhead - 8)  # 8: joins between pieces can tokenize longer
        while True:
            text = self.model.detokenize(tokens[len(tokens) - keep:] if keep else []).decode(
                "utf-8", errors="ignore")
            shortened = system + [{**last, "content": text}]
            if keep == 0 or len(self.prompt_tokens(shortened)) <= budget:
                return shortened
            keep -= 16

    # --- generation ---------------------------------------------------------------------

    def stream(self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.7,
               repeat_penalty: float = 1.0,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """The reply to ``messages`` (fitted to the window first), piece by piece."""
        rendered = self._formatter(messages=self.fit(messages, max_tokens))
        prompt = self.model.tokenize(rendered.prompt.encode("utf-8"),
                                     add_bos=not rendered.added_special, special=True)
        with self._lock:
            self._cancel.clear()
            self.last_prompt_tokens = len(prompt)
            chunks = self.model.create_completion(
                prompt, stream=True, max_tokens=max_tokens, temperature=temperature,
                repeat_penalty=repeat_penalty, stop=rendered.stop,
                stopping_criteria=rendered.stopping_criteria)
            try:
                for chunk in chunks:
                    if self._cancel.is_set() or (cancel is not None and cancel.is_set()):
                        break
                    piece = chunk["choices"][0]["text"]
                    if piece:
                        yield piece
            finally:
                chunks.close()  # stops llama.cpp generating the rest

    def complete(self, messages: list[dict], **kw) -> str:
        return "".join(self.stream(messages, **kw))
