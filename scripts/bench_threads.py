"""How the three engines share a CPU when they all work at once: the thread settings compared.

Used by ``scripts/bench.py --threads``. For each setting the three engines of the profile are
loaded with it and then run together for ``seconds``, each in its own thread, as in a busy
conversation: Whisper transcribes the sample (a 5 s utterance) over and over, the LLM answers a
question (up to 48 tokens), Kokoro speaks a sentence. Figures per setting: Whisper's time per
utterance, the LLM's time to first token and tokens/s, Kokoro's time to first audio, medians.
Settings are run in turn, twice, in alternating order. Then Whisper alone with two
transcriptions at once (two conversations' turns ending together), one worker against two.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import soundfile as sf
from faster_whisper import WhisperModel

from stack.config import Settings
from stack.engines.llm import LlamaLLM
from stack.engines.stt import WhisperSTT
from stack.engines.tts import load_tts

QUESTION = [{"role": "system", "content": "You are brief."},
            {"role": "user", "content": "Tell me about the city of Paris."}]
SENTENCE = "Thanks for asking! The weather looks great today, so it is a good time for a walk."


def settings_to_compare() -> list[tuple[str, dict]]:
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    quarter = max(1, cores // 4)
    return [
        ("each engine's own default (all cores)", dict(stt=0, llm=None, tts=None, spin=True)),
        (f"budget (the default): STT {quarter}, LLM {half}, TTS {quarter}",
         dict(stt=quarter, llm=half, tts=quarter, spin=True)),
        (f"budget: STT {quarter}, LLM {half}, TTS {quarter}, ONNX Runtime threads not spinning",
         dict(stt=quarter, llm=half, tts=quarter, spin=False)),
    ]


def _load(settings: Settings, cfg: dict):
    p, root = settings.profile, settings.models_dir
    stt = WhisperSTT(root / p.stt_model, device="cpu", threads=cfg["stt"])
    llm = LlamaLLM(root / p.llm_model, device="cpu", n_ctx=1024, threads=cfg["llm"])
    tts = load_tts(backend=p.tts_backend, model_path=root / p.tts_model,
                   config_path=root / p.tts_config, voices_dir=root / p.voices_dir,
                   default_voice=p.default_voice, device="cpu", threads=cfg["tts"],
                   spin=cfg["spin"])
    return stt, llm, tts


def _together(stt, llm, tts, audio, seconds: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"stt": [], "ttft": [], "tps": [], "tts": []}
    deadline = time.monotonic() + seconds

    def whisper():
        while time.monotonic() < deadline:
            t = time.perf_counter()
            stt.transcribe(audio)
            out["stt"].append(time.perf_counter() - t)

    def language_model():
        while time.monotonic() < deadline:
            t = time.perf_counter()
            first, n = None, 0
            for _ in llm.stream(QUESTION, max_tokens=48, temperature=0):
                first = first or time.perf_counter() - t
                n += 1
            total = time.perf_counter() - t
            out["ttft"].append(first or total)
            if n > 1 and first:
                out["tps"].append((n - 1) / (total - first))

    def kokoro():
        while time.monotonic() < deadline:
            t = time.perf_counter()
            next(iter(tts.synthesize(SENTENCE, quick_start=True)))
            out["tts"].append(time.perf_counter() - t)

    threads = [threading.Thread(target=f) for f in (whisper, language_model, kokoro)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def run_threads_bench(settings: Settings, seconds: float = 15, rounds: int = 2):
    audio, sr = sf.read(settings.models_dir / settings.profile.sample_wav, dtype="float32")
    assert sr == 16000
    configs = settings_to_compare()
    got: dict[str, dict[str, list[float]]] = {name: {} for name, _ in configs}
    for r in range(rounds):
        for name, cfg in (configs if r % 2 == 0 else list(reversed(configs))):
            stt, llm, tts = _load(settings, cfg)
            _together(stt, llm, tts, audio, 2)  # warm-up
            res = _together(stt, llm, tts, audio, seconds)
            for k, v in res.items():
                got[name].setdefault(k, []).extend(v)
            llm.close()
            print(f"round {r + 1} {name}: " + ", ".join(
                f"{k} {statistics.median(v):.3f}" for k, v in res.items() if v), flush=True)

    def med(v: list[float], scale: float = 1000, unit: str = " ms") -> str:
        return f"{statistics.median(v) * scale:.0f}{unit}" if v else "n/a"

    lines = ["| threads | Whisper, 5 s utterance | LLM first token | LLM tokens/s | "
             "Kokoro first audio |", "|---|---|---|---|---|"]
    for name, _ in configs:
        g = got[name]
        lines.append(f"| {name} | {med(g.get('stt', []))} | {med(g.get('ttft', []))} | "
                     f"{med(g.get('tps', []), 1, '')} | {med(g.get('tts', []))} |")
    notes = (f"The three engines working at once for {seconds:g} s per setting and round, "
             f"{rounds} rounds, settings alternating; medians.")
    lines += ["", "| Whisper, two transcriptions at once | utterances done | time each (median) |",
              "|---|---|---|"]
    for workers, (done, each) in _stt_workers(settings, audio, seconds, rounds).items():
        lines.append(f"| {workers} worker{'s' if workers > 1 else ''} (STT_WORKERS) | {done} | "
                     f"{each * 1000:.0f} ms |")
    return "\n".join(lines), notes


def _stt_workers(settings: Settings, audio, seconds: float, rounds: int):
    """Two threads transcribing over and over, one CPU thread each: 1 worker against 2."""
    path = settings.models_dir / settings.profile.stt_model
    got: dict[int, tuple[int, list[float]]] = {1: (0, []), 2: (0, [])}
    for r in range(rounds):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1,
                                 num_workers=workers, local_files_only=True)
            list(model.transcribe(audio, beam_size=1, language="en")[0])  # warm-up
            times: list[float] = []
            deadline = time.monotonic() + seconds

            def transcribe(model=model, times=times, deadline=deadline):
                while time.monotonic() < deadline:
                    t = time.perf_counter()
                    list(model.transcribe(audio, beam_size=1, language="en",
                                          word_timestamps=True, vad_filter=False,
                                          condition_on_previous_text=False)[0])
                    times.append(time.perf_counter() - t)

            pair = [threading.Thread(target=transcribe) for _ in range(2)]
            for t in pair:
                t.start()
            for t in pair:
                t.join()
            done, all_times = got[workers]
            got[workers] = (done + len(times), all_times + times)
            print(f"round {r + 1} Whisper workers={workers}: {len(times)} in {seconds:g} s",
                  flush=True)
    return {w: (done, statistics.median(times)) for w, (done, times) in got.items()}
