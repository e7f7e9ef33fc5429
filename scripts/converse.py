#!/usr/bin/env python3
"""One conversational turn from the command line, on the engines alone (no LiveKit, no browser).

    python scripts/converse.py question.wav --out reply.wav

Transcribes a 16 kHz mono WAV, asks the LLM, speaks the answer with Kokoro, writes the reply's
audio and, beside it, its lip-sync messages (reply.timings.json, the protocol of docs/protocol.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from stack.config import get_settings  # noqa: E402
from stack.engines.load import load_engines  # noqa: E402
from stack.lipsync import SAMPLE_RATE  # noqa: E402
from stack.protocol import chunk_message  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("wav", type=Path, help="the question: a 16 kHz mono WAV")
    ap.add_argument("--out", type=Path, default=Path("reply.wav"))
    args = ap.parse_args()
    settings = get_settings()

    audio, sr = sf.read(args.wav, dtype="float32", always_2d=True)
    if sr != 16_000:
        print(f"error: {args.wav} is {sr} Hz; give a 16 kHz WAV (sox in.wav -r 16000 -c 1 out.wav)",
              file=sys.stderr)
        return 2
    engines = load_engines(settings)
    t = time.perf_counter()
    question = engines.stt.transcribe(audio.mean(axis=1)).text
    print(f"you:  {question}")
    answer = engines.llm.complete([{"role": "system", "content": settings.system_prompt},
                                   {"role": "user", "content": question}],
                                  max_tokens=settings.llm_max_tokens,
                                  temperature=settings.temperature)
    print(f"bot:  {answer}")
    pieces, messages, offset = [], [], 0
    for seq, chunk in enumerate(engines.tts.synthesize(answer)):
        messages.append(chunk_message(chunk.timing, chunk.audio, turn_id="cli", seq=seq,
                                      text=chunk.text, offset_ms=offset * 1000 / SAMPLE_RATE
                                      ).model_dump(mode="json"))
        pieces.append(chunk.audio)
        offset += len(chunk.audio)
    sf.write(args.out, np.concatenate(pieces) if pieces else np.zeros(0, np.float32), SAMPLE_RATE)
    timings = args.out.with_suffix(".timings.json")
    timings.write_text(json.dumps(messages, indent=1, ensure_ascii=False))
    print(f"wrote {args.out} ({offset / SAMPLE_RATE:.1f} s) and {timings} "
          f"in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
