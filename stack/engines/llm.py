"""Chat LLM with llama.cpp (llama-cpp-python), streaming, cancellable (barge-in)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from .device import resolve_device


class LlamaLLM:
    """One GGUF model; ``stream(messages)`` yields text pieces using the GGUF's chat template.

    Generations run one at a time (a llama.cpp context is not re-entrant); ``cancel()`` or the
    ``cancel`` event passed to ``stream`` stops a running one before its next token."""

    def __init__(self, model_path: Path, *, device: str = "auto", n_ctx: int = 4096,
                 threads: int | None = None, seed: int = 0):
        from llama_cpp import Llama

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
        self._lock = threading.Lock()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def stream(self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.7,
               repeat_penalty: float = 1.0,
               cancel: threading.Event | None = None) -> Iterator[str]:
        with self._lock:
            self._cancel.clear()
            chunks = self.model.create_chat_completion(
                messages=messages, stream=True, max_tokens=max_tokens, temperature=temperature,
                repeat_penalty=repeat_penalty)
            try:
                for chunk in chunks:
                    if self._cancel.is_set() or (cancel is not None and cancel.is_set()):
                        break
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
            finally:
                chunks.close()  # stops llama.cpp generating the rest

    def complete(self, messages: list[dict], **kw) -> str:
        return "".join(self.stream(messages, **kw))
