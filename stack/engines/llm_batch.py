"""Many conversations on one llama.cpp model at once: continuous batching, in-process.

``BatchedLlamaLLM`` keeps one context holding ``parallel`` sequences, one per conversation,
and one scheduler thread. Each step the scheduler admits waiting requests to free sequences,
then makes a single ``llama_decode`` call that carries one new token of every sequence that is
generating plus a chunk of the prompts still being read (at most ``batch_tokens`` in all, so a
long prompt never stalls the others for long). A token costs about the same for eight
sequences as for one: the weights are read once per step, not once per conversation.

A conversation keeps its sequence, and the tokens cached in it, between turns: the next turn
reads only what follows the longest common prefix (its new user message, mostly). A request
whose conversation lost its sequence (more conversations than sequences) takes the free
sequence that shares the longest prefix with its prompt, the least recently used on a tie.

The design follows llama.cpp's own server (slots, continuous batching); the engine offers the
same ``stream``/``fit`` interface as ``LlamaLLM``, which stays the one-at-a-time baseline
(``LLM_PARALLEL=1``).
"""

from __future__ import annotations

import codecs
import collections
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .llm import LlamaLLM

_DONE = object()


@dataclass(eq=False)
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what the KV cache holds, positions 0..n-1
    session: object = None
    busy: bool = False
    last_used: float = 0.0


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    max_tokens: int
    temperature: float
    repeat_penalty: float
    seed: int
    stop: list[str]
    stop_ids: set[int]
    cancel: threading.Event | None
    session: object
    submitted: float = field(default_factory=time.monotonic)
    out: queue.Queue = field(default_factory=queue.Queue)
    abandoned: bool = False  # the consumer stopped reading
    slot: _Slot | None = None
    todo: list[int] = field(default_factory=list)  # prompt tokens not yet read into the cache
    next_token: int | None = None  # sampled, to be decoded in the next step
    generated: int = 0
    sampler: object = None
    decoder: object = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    held: str = ""  # text that could be the start of a stop string

    def cancelled(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchedLlamaLLM(LlamaLLM):
    """``LlamaLLM`` with ``parallel`` conversations decoded together (see the module doc)."""

    def __init__(self, model_path: Path, *, device: str = "auto", n_ctx: int = 4096,
                 threads: int | None = None, seed: int = 0, parallel: int = 4,
                 batch_tokens: int = 512, unified_kv: bool = True):
        import llama_cpp
        from llama_cpp import _internals

        super().__init__(model_path, device=device, n_ctx=n_ctx, threads=threads, seed=seed,
                         own_context=False)
        self._llama_cpp = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * parallel
        params.n_seq_max = parallel
        # One KV buffer for all sequences. Split buffers (each sequence its own n_ctx cells)
        # made a step of 28 sequences take 35 ms on an H200 against 4.4 ms unified, and were
        # slower on a CPU too (docs/benchmarks.md).
        params.kv_unified = unified_kv
        params.n_batch = params.n_ubatch = batch_tokens
        cores = os.cpu_count() or 1
        params.n_threads = threads or max(1, cores // 2)  # what Llama() picks when not told
        params.n_threads_batch = threads or cores
        params.no_perf = True
        # As Llama() does on a CPU, so the two engines compute alike there; on a GPU llama.cpp
        # picks flash attention where it has it.
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO if self.device == "cuda"
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = _internals.LlamaContext(model=self.model._model, params=params, verbose=False)
        self._vocab = self.model._model.vocab
        self._batch = llama_cpp.llama_batch_init(batch_tokens, 0, 1)
        self.parallel = parallel
        self.batch_tokens = batch_tokens
        self.last_prefilled_tokens = 0  # of the latest admitted request: read, not reused
        self._slots = [_Slot(seq) for seq in range(parallel)]
        self._waiting: collections.deque[_Request] = collections.deque()
        self._active: list[_Request] = []
        self._wake = threading.Condition()
        self._closed = False
        self._requests = 0
        self._thread = threading.Thread(target=self._run, name="llm-batch", daemon=True)
        self._thread.start()

    # --- the caller's side --------------------------------------------------------------

    def stream(self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.7,
               repeat_penalty: float = 1.0, cancel: threading.Event | None = None,
               session: object = None) -> Iterator[str]:
        """The reply to ``messages`` (fitted to the window first), piece by piece, decoded
        together with every other conversation's. ``session`` names the conversation, so its
        next turn finds its cached tokens; ``cancel`` stops it before the next step."""
        if self._closed:  # the model is freed: tokenizing now would crash the process
            raise RuntimeError("the LLM engine is closed")
        rendered, prompt = self._render(self.fit(messages, max_tokens)[0])
        self._requests += 1
        request = _Request(
            prompt=prompt, max_tokens=max_tokens, temperature=temperature,
            repeat_penalty=repeat_penalty, seed=self.seed + self._requests,
            stop=[rendered.stop] if isinstance(rendered.stop, str) else list(rendered.stop or []),
            stop_ids=set(self._formatter.stop_token_ids or ()), cancel=cancel, session=session)
        self.last_prompt_tokens = len(prompt)
        with self._wake:
            if self._closed:
                raise RuntimeError("the LLM engine is closed")
            self._waiting.append(request)
            self._wake.notify()
        try:
            while (item := request.out.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                if cancel is not None and cancel.is_set():
                    break  # pieces the scheduler queued before it saw the cancel go unheard
                yield item
        finally:
            request.abandoned = True  # a consumer that stops early frees the sequence

    def cancel(self) -> None:
        """Stop every generation now running (each at its next step)."""
        with self._wake:
            for request in [*self._active, *self._waiting]:
                request.abandoned = True
            self._wake.notify()

    def release(self, session: object) -> None:
        """The conversation ``session`` has ended: its sequence goes to whoever needs one (its
        cached tokens stay until then, for a prompt that shares them)."""
        with self._wake:
            for slot in self._slots:
                if slot.session == session:
                    slot.session = None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        if self._batch is not None:
            self._llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        super().close()

    # --- the scheduler ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    if self._closed:
                        for request in [*self._active, *self._waiting]:
                            request.out.put(RuntimeError("the LLM engine is closed"))
                            request.out.put(_DONE)
                        return
                    self._admit()
                    if self._active:
                        break
                    self._wake.wait()
            try:
                self._step()
            except Exception as e:  # never leave a caller waiting on a dead scheduler
                for request in list(self._active):
                    self._finish(request, error=e)

    def _admit(self) -> None:
        """Give waiting requests a free sequence, oldest request first."""
        for request in [r for r in self._waiting if r.cancelled()]:
            self._waiting.remove(request)
            request.out.put(_DONE)
        while self._waiting:
            free = [s for s in self._slots if not s.busy]
            if not free:
                return
            request = self._waiting.popleft()
            own = [s for s in free if request.session is not None and s.session == request.session]
            # Else a sequence nobody owns if there is one, so a live conversation keeps its cache.
            candidates = own or [s for s in free if s.session is None] or free
            # longest shared prefix, then least recently used, then the lowest sequence number
            shared, _, _, slot = max(
                (_common_prefix(s.tokens, request.prompt), -s.last_used, -s.seq, s)
                for s in candidates)
            keep = min(shared, len(request.prompt) - 1)  # the last prompt token gives the logits
            self._llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq, keep, -1)
            del slot.tokens[keep:]
            slot.busy, slot.session, slot.last_used = True, request.session, time.monotonic()
            request.slot, request.todo = slot, request.prompt[keep:]
            request.sampler = self._sampler(request)
            self._active.append(request)
            self.last_prefilled_tokens = len(request.todo)
            self.stats.reused_tokens += keep
            self.stats.admit(time.monotonic() - request.submitted)

    def _sampler(self, request: _Request):
        from llama_cpp import _internals

        sampler = _internals.LlamaSampler()
        if request.repeat_penalty != 1.0:
            sampler.add_penalties(64, request.repeat_penalty, 0.0, 0.0)
        if request.temperature <= 0:
            sampler.add_greedy()
        else:  # create_completion's defaults, so both engines sample alike
            sampler.add_top_k(40)
            sampler.add_top_p(0.95, 1)
            sampler.add_min_p(0.05, 1)
            sampler.add_temp(request.temperature)
            sampler.add_dist(request.seed)
        return sampler

    def _step(self) -> None:
        lib = self._llama_cpp
        for request in [r for r in self._active if r.cancelled()]:
            self._finish(request)
        if not self._active:
            return
        batch = self._batch
        n = 0
        sample_at: list[tuple[_Request, int]] = []

        def add(request: _Request, token: int, logits: bool) -> None:
            nonlocal n
            slot = request.slot
            batch.token[n] = token
            batch.pos[n] = len(slot.tokens)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq
            batch.logits[n] = logits
            slot.tokens.append(token)
            if logits:
                sample_at.append((request, n))
            n += 1

        generating = [r for r in self._active if r.next_token is not None]
        for request in generating:  # one token each: every reply moves every step
            add(request, request.next_token, True)
            request.next_token = None
        for request in self._active:  # then the prompts, in arrival order, as room allows
            if not request.todo or n >= self.batch_tokens:
                continue
            chunk = request.todo[:self.batch_tokens - n]
            request.todo = request.todo[len(chunk):]
            for i, token in enumerate(chunk):
                add(request, token, not request.todo and i == len(chunk) - 1)
            self.stats.prefilled_tokens += len(chunk)
        batch.n_tokens = n
        started = time.perf_counter()
        rc = lib.llama_decode(self._ctx.ctx, batch)
        self.stats.decode_seconds += time.perf_counter() - started
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc})")
        self.stats.steps += 1
        self.stats.batch_sequences += len({id(r) for r, _ in sample_at}) + sum(
            1 for r in self._active if r.todo)
        for request, index in sample_at:
            token = request.sampler.sample(self._ctx, index)
            request.generated += 1
            self.stats.generated_tokens += 1
            if lib.llama_vocab_is_eog(self._vocab, token) or token in request.stop_ids:
                self._finish(request)
                continue
            piece = self._piece(token)
            if not self._emit(request, request.decoder.decode(piece)):
                self._finish(request)
            elif request.generated >= request.max_tokens:
                self._emit(request, request.decoder.decode(b"", final=True))
                self._finish(request)
            else:
                request.next_token = token

    def _piece(self, token: int) -> bytes:
        import ctypes

        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n  # the piece needs this many bytes

    def _emit(self, request: _Request, text: str) -> bool:
        """Pass ``text`` on, holding back what could begin a stop string; False at a stop."""
        text = request.held + text
        request.held = ""
        for stop in request.stop:
            if (at := text.find(stop)) >= 0:
                if at:
                    request.out.put(text[:at])
                return False
        hold = max((k for stop in request.stop for k in range(1, len(stop))
                    if text.endswith(stop[:k])), default=0)
        if hold:
            text, request.held = text[:-hold], text[-hold:]
        if text:
            request.out.put(text)
        return True

    def _finish(self, request: _Request, error: Exception | None = None) -> None:
        slot = request.slot
        if error is not None:  # the cache of a failed step is not to be trusted
            self._llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq, 0, -1)
            slot.tokens.clear()
            request.out.put(error)
        elif request.held and not request.cancelled():
            request.out.put(request.held)
        if request.sampler is not None:
            request.sampler.close()
            request.sampler = None
        slot.busy, slot.last_used = False, time.monotonic()
        self._active.remove(request)
        request.out.put(_DONE)
