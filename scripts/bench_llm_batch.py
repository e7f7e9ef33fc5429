#!/usr/bin/env python3
"""Many conversations on one LLM: the batched engine against one-at-a-time, in the same run.

    python scripts/bench.py --llm-batch 1,2,4           # via the main benchmark (profile's model)
    python scripts/bench_llm_batch.py --model models/test/SmolLM2-135M-Instruct.Q4_1.gguf \
        --device cuda --sizes 1,4,8,16,32              # standalone: needs only llama-cpp-python

For each N, N conversations talk at once for ``--seconds``: each asks its next question the
moment its last reply ended (its history grows, fitted to the window as in the product), so
the engine is never idle. Greedy decoding. Each N runs ``--rounds`` times per engine, the two
engines alternating (one at a time, batched, batched, one at a time, ...)
so a machine that slows down mid-run weighs on both. Figures: aggregate generated tokens/s
(every reply's tokens over the wall time of the round), time to first token p50/p95 over all
turns, and the batched engine's mean sequences per step.

Only llama-cpp-python, Jinja2 and numpy are needed (not Pipecat), so it also runs on a GPU box
that has nothing else of ours installed.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402
from bench_common import commit, machine, write_section  # noqa: E402

from stack.engines.llm import LlamaLLM  # noqa: E402
from stack.engines.llm_batch import BatchedLlamaLLM  # noqa: E402

SYSTEM = ("You are a friendly assistant speaking out loud through a 3D avatar. Answer in one to "
          "three short sentences of plain spoken English: no lists, no markdown, no emoji.")
TOPICS = ["the moon", "bicycles", "coffee", "volcanoes", "penguins", "the piano", "bread",
          "lighthouses", "honey bees", "chess", "rainbows", "sailing", "tea", "glaciers", "owls",
          "paper", "trains", "tomatoes", "the violin", "maps", "clouds", "salt", "kites", "ants",
          "bridges", "lemons", "rivers", "clocks", "snow", "wolves", "glass", "cheese"]


def _conversation(engine, index: int, deadline: float, max_tokens: int, session: object,
                  salt: int = 0):
    """One person asking question after question, each the moment the last reply ended, until
    ``deadline``. Returns the time to first token and the generated tokens of each turn."""
    history = [{"role": "system", "content": SYSTEM}]
    firsts, tokens = [], []
    turn = 0
    while not firsts or time.perf_counter() < deadline:
        topic = TOPICS[(index + turn * 7 + salt * 3) % len(TOPICS)]
        turn += 1
        history.append({"role": "user",
                        "content": f"Tell me something surprising about {topic}."})
        started = time.perf_counter()
        first = None
        reply = ""
        for piece in engine.stream(history, max_tokens=max_tokens, temperature=0.0,
                                   session=session):
            if first is None:
                first = time.perf_counter() - started
            reply += piece
        firsts.append(first if first is not None else time.perf_counter() - started)
        tokens.append(len(engine.tokenize(reply)))
        history.append({"role": "assistant", "content": reply})
    return firsts, tokens


def one_round(engine, n: int, seconds: float, max_tokens: int, salt: int = 0) -> dict:
    """``n`` people talking at once for ``seconds`` (the replies under way then are finished
    and counted: the wall time runs until the last one ends)."""
    results: list = [None] * n
    errors: list = []
    deadline = time.perf_counter() + seconds

    def person(i: int) -> None:
        try:
            results[i] = _conversation(engine, i, deadline, max_tokens, ("bench", n, salt, i),
                                       salt)
        except Exception as e:  # reported after the round
            errors.append(e)

    threads = [threading.Thread(target=person, args=(i,)) for i in range(n)]
    generated = engine.stats.generated_tokens
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    for i in range(n):
        engine.release(("bench", n, salt, i))
    firsts = [f for r in results for f in r[0]]
    # The engine's own count: re-tokenizing the replies' text miscounts text that is not
    # the model's own words (a shaped model's noise re-tokenizes into ~2x as many tokens).
    tokens = engine.stats.generated_tokens - generated
    return {"wall": wall, "tokens": tokens, "firsts": firsts}


def run_llm_batch_bench(model: Path, device: str, sizes: list[int], *, seconds: float = 8,
                        rounds: int = 2, max_tokens: int = 64, n_ctx: int = 2048,
                        threads: int | None = None) -> tuple[str, str]:
    lock = LlamaLLM(model, device=device, n_ctx=n_ctx, threads=threads)
    batched = BatchedLlamaLLM(model, device=device, n_ctx=n_ctx, threads=threads,
                              parallel=max(sizes))
    engines = {"one at a time": lock, "batched": batched}
    for engine in engines.values():  # warm-up: first-call allocations out of the figures
        one_round(engine, 1, 0, 8)
    rows = []
    for n in sizes:
        runs: dict[str, list[dict]] = {name: [] for name in engines}
        steps0, seqs0 = batched.stats.steps, batched.stats.batch_sequences
        for r in range(rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for name in order:
                runs[name].append(one_round(engines[name], n, seconds, max_tokens, salt=r))
                print(f"N={n} round {r + 1} {name}: {runs[name][-1]['tokens']} tokens in "
                      f"{runs[name][-1]['wall']:.2f} s", flush=True)
        steps = batched.stats.steps - steps0
        per_step = (batched.stats.batch_sequences - seqs0) / steps if steps else 0.0
        rate = {}
        for name, rs in runs.items():
            firsts = [f for x in rs for f in x["firsts"]]
            rate[name] = sum(x["tokens"] for x in rs) / sum(x["wall"] for x in rs)
            rows.append((n, name, rate[name], np.percentile(firsts, 50) * 1000,
                         np.percentile(firsts, 95) * 1000,
                         per_step if name == "batched" else 1.0))
        rows.append((n, "ratio", rate["batched"] / rate["one at a time"], None, None, None))
    batched.close()
    lock.close()
    lines = ["| conversations | engine | tokens/s (all together) | first token p50 | "
             "first token p95 | sequences per step |", "|---|---|---|---|---|---|"]
    for n, name, rate, p50, p95, per_step in rows:
        if name == "ratio":
            lines.append(f"| {n} | **batched ÷ one at a time** | **{rate:.2f}×** | | | |")
        else:
            lines.append(f"| {n} | {name} | {rate:.0f} | {p50:.0f} ms | {p95:.0f} ms | "
                         f"{per_step:.1f} |")
    notes = (f"Model `{Path(model).name}` on {device}; each round {seconds:g} s of "
             f"conversations asking question after question, replies of up to {max_tokens} "
             f"tokens, greedy; {rounds} rounds per engine and N, "
             "alternating; the batched engine holds "
             f"{max(sizes)} sequences of {n_ctx} tokens.")
    return "\n".join(lines), notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a GGUF chat model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default="1,2,4", help="numbers of conversations, comma-separated")
    ap.add_argument("--seconds", type=float, default=8, help="length of one round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=2048, help="tokens per conversation")
    ap.add_argument("--label", default="test", help="the section's name in docs/benchmarks.md")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--note", default="", help="a sentence for the section, e.g. what the model is")
    args = ap.parse_args()
    from stack.engines.device import resolve_device

    device = resolve_device(args.device)
    table, notes = run_llm_batch_bench(args.model, device, [int(s) for s in args.sizes.split(",")],
                                       seconds=args.seconds, rounds=args.rounds,
                                       max_tokens=args.max_tokens, n_ctx=args.ctx)
    stamp = f"Machine: {machine()}. Commit: `{commit()}`. Date: {datetime.now(UTC):%Y-%m-%d}."
    print(write_section(args.out, f"llm-batch:{args.label}",
                        f"Many conversations on one LLM, `{args.label}`",
                        " ".join(x for x in (stamp, notes, args.note) if x),
                        table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
