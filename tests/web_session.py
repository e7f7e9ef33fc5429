"""A conversation in real headless Chromium against the real stack, and the lip-sync measure.

Used by tests/test_web_e2e.py (behaviour) and scripts/bench.py --web (docs/benchmarks.md):

- ``BotProcess`` runs ``python -m stack.app`` — the bot container's command — on the `test` models;
- ``run_session`` drives web/e2e/session.mjs (playwright-core + Debian's Chromium, a WAV as the
  microphone) and loads what the page logged;
- ``lip_sync_offsets`` measures, for every bot word, when its first mouth shape was applied
  versus when its audio was heard in the page, for our scheduling and two baselines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from stack.engines.stt import resample

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
SHARED_AVATARS = ROOT.parent / "shared" / "avatars"
# ATSC IS-191: audio at most 15 ms ahead of the picture, at most 45 ms behind it.
# Offset = mouth time - audio time: + means the mouth is late (audio ahead).
WINDOW_MS = (-45.0, 15.0)


def write_mic_wav(path: Path, audio: np.ndarray, rate: int, lead_s: float, tail_s: float) -> None:
    """A 48 kHz 16-bit mono WAV for Chromium's fake microphone (it loops the file)."""
    voice = resample(audio, rate, 48000)
    pcm = np.concatenate([np.zeros(int(lead_s * 48000)), voice, np.zeros(int(tail_s * 48000))])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


# The bot container's command (Dockerfile CMD, checked by tests/test_compose.py) minus "python".
BOT_ARGS = ("-m", "stack.app")


class BotProcess:
    """``python -m stack.app`` (or ``args``) with the given settings, until ``/ready`` answers
    200."""

    def __init__(self, env: dict[str, str], port: int, log: Path,
                 args: tuple[str, ...] = BOT_ARGS):
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT,
                                     env={**os.environ, **env, "HTTP_PORT": str(port),
                                          "HTTP_HOST": "127.0.0.1"},
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bot exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the bot is not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@dataclass
class Session:
    result: dict
    capture: np.ndarray  # the bot's voice as heard in the page
    out: Path

    def heard_time(self, sample: np.ndarray | float) -> np.ndarray:
        """Page time (ms) at which a capture sample was heard."""
        idx, t = np.array(self.result["blockTimes"], dtype=np.float64).T
        return np.interp(sample, idx, t)

    def sample_at(self, page_ms: float) -> float:
        idx, t = np.array(self.result["blockTimes"], dtype=np.float64).T
        return float(np.interp(page_ms, t, idx))


def run_session(base_url: str, wav: Path, out: Path, talk_s: int, timeout: float = 600,
                custom_glb: Path | None = None, typed_chat: bool = True) -> Session:
    """``custom_glb``: a GLB file the page loads as a person's own avatar before talking;
    ``typed_chat``: False for a bot that takes no typed messages (its session skips that step)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **({"CUSTOM_GLB": str(custom_glb)} if custom_glb else {}),
           "TYPED_CHAT": "1" if typed_chat else "0"}
    subprocess.run(["node", "e2e/session.mjs", base_url, str(wav), str(out), str(talk_s)],
                   cwd=WEB, check=True, timeout=timeout, env=env)
    return load_session(out)


def load_session(out: Path) -> Session:
    """What a browser script wrote to ``out``: session.json and the heard voice, capture.f32."""
    result = json.loads((out / "session.json").read_text())
    capture = np.fromfile(out / "capture.f32", dtype="<f4") if (out / "capture.f32").exists() \
        else np.zeros(0, np.float32)
    return Session(result, capture, out)


def kokoro_reference(tts):
    """``reference(messages)`` for ``lip_sync_offsets``: a turn's audio as the bot synthesized it
    (Kokoro is deterministic), made once per turn and kept (several frame grids measure it)."""
    cache: dict[tuple, np.ndarray] = {}

    def reference(messages):
        key = tuple((m["seq"], m["text"], m.get("voice")) for m in messages)
        if key not in cache:
            cache[key] = np.concatenate([
                c.audio for m in messages
                for c in tts.synthesize(m["text"], voice=m.get("voice"),
                                        quick_start=m["seq"] == 0)])
        return cache[key]
    return reference


def _first_frame_at(frames: np.ndarray, t: float) -> float:
    """A mouth shape due at ``t`` is applied in the first rendered frame at or after it."""
    i = np.searchsorted(frames, t)
    return float(frames[i]) if i < len(frames) else np.nan


def _locate(capture: np.ndarray, reference: np.ndarray, guess: int, before: int,
            after: int) -> tuple[int, float]:
    """Where ``reference`` best matches ``capture`` from ``before`` samples ahead of ``guess`` to
    ``after`` samples past it: (start sample, normalised correlation)."""
    lo = max(0, guess - before)
    hi = min(len(capture), guess + after + len(reference))
    seg = capture[lo:hi]
    if len(seg) < len(reference) or not np.any(reference):
        return guess, 0.0
    n = 1 << int(np.ceil(np.log2(len(seg) + len(reference))))
    spectrum = np.fft.rfft(seg, n) * np.conj(np.fft.rfft(reference, n))
    corr = np.fft.irfft(spectrum, n)[: len(seg) - len(reference) + 1]
    window = np.ones(len(reference))
    norm = np.linalg.norm(reference)
    energy = np.sqrt(np.convolve(seg ** 2, window, "valid")) * norm
    # A stretch far quieter than the word cannot be it; without the floor, the rounding error of
    # the FFT over near-silence (codec noise, ~1e-5: aiortc's Opus) scored as a perfect match.
    score = corr / np.maximum(energy, 0.01 * norm ** 2)
    best = int(np.argmax(score))
    return lo + best, float(score[best])


def frame_grids(session: Session) -> dict[str, np.ndarray]:
    """When mouth shapes can be shown: the frames this browser rendered (a GPU-less test machine
    manages only a few per second), and an ideal 60 Hz display over the same time."""
    frames = np.sort(np.array([f[0] for f in session.result["frames"]], dtype=np.float64))
    return {"60 Hz display": np.arange(frames[0], frames[-1], 1000 / 60),
            "frames rendered here": frames}


def lip_sync_offsets(session: Session, reference: Callable[[list[dict]], np.ndarray],
                     frames: np.ndarray, min_match: float = 0.6,
                     energy_level: float = 0.02) -> dict[str, list[float]]:
    """Signed offsets (ms, + = mouth late) of every bot word whose audio was found in the
    capture, each mouth shape shown on the first of ``frames`` at or after its time. Each word
    is found on its own (its stretch of the bot's audio, correlated with what the page heard),
    so a hole in the heard voice moves the words after it, not the measure.

    - ``ours``: the page's scheduling (arrival + lead + receive delay, chained by offset_ms,
      corrected by the onset of the turn's voice in the played track);
    - ``predicted``: the same without the correction of the turn's start by its heard onset;
    - ``stats``: that prediction also without the receive delay's correction learned from the
      onsets heard before (ReceiveDelay.learn): WebRTC's stats alone, as the page placed chunks
      before it learned (a baseline in the same session);
    - ``text``: TalkingHead's text-only lip-sync of the same words, started when the message
      arrives (what a client without the anchor does);
    - ``energy``: a mouth that opens when the heard audio's level crosses ``energy_level``
      (an analyser polled every frame); a word whose audio does not raise the level from below
      the threshold gets no onset (nan: outside any window).

    ``reference(messages)`` returns a turn's audio (24 kHz) as the bot synthesized it.

    ``budget``: for each word of ``ours``, where its offset comes from (``BUDGET_PARTS``).
    """
    r, cap = session.result, session.capture
    rate = r["sampleRate"]
    # the energy mouth: level of the last 1024 heard samples at every rendered frame
    frame_samples = np.array([session.sample_at(t) for t in frames])
    level = np.array([np.sqrt(np.mean(cap[max(0, int(s) - 1024): int(s)] ** 2)) if s > 1024 else 0.0
                      for s in frame_samples])
    opens = frames[1:][(level[1:] >= energy_level) & (level[:-1] < energy_level)]

    turns: dict[str, list[dict]] = {}
    for c in r["chunks"]:
        turns.setdefault(c["msg"]["turn_id"], []).append(c)
    out: dict[str, list] = {"ours": [], "predicted": [], "stats": [], "text": [], "energy": [],
                            "budget": []}
    for chunks in turns.values():
        chunks.sort(key=lambda c: c["msg"]["seq"])
        if [c["msg"]["seq"] for c in chunks] != list(range(len(chunks))):
            continue
        audio = reference([c["msg"] for c in chunks])
        at, learned = 0, 0.0
        for c in chunks:
            m = c["msg"]
            if c["scheduled"] is not None and c["scheduled"]["anchored"]:
                learned = c.get("delayCorrection", 0.0)  # a chained chunk keeps its anchor's
            ref = audio[at: at + m["samples"]]
            at += m["samples"]
            if c["scheduled"] is None or len(cap) == 0:
                continue
            ref = resample(ref, 24000, rate)
            sched = {w["index"] - c["scheduled"]["words"][0]["index"]: w["start"]
                     for w in c["scheduled"]["words"]} if c["scheduled"]["words"] else {}
            lead = c.get("mouthLeadMs", 0)  # the page shows each shape this much before its sound
            guess, before, prev_wt = session.sample_at(c["scheduled"]["start"]), 0.8 * rate, 0.0
            first_word: tuple[float, float] | None = None  # (scheduled, heard) of the chunk's first
            for i, (wt, wd) in enumerate(zip(m["wtimes"], m["wdurations"], strict=True)):
                # the word's own audio, at least 150 ms of it (short words correlate poorly)
                a, b = int(wt / 1000 * rate), int((wt + max(wd, 150)) / 1000 * rate)
                guess += (wt - prev_wt) / 1000 * rate
                found, score = _locate(cap, ref[a:b], int(guess), int(before), int(1.5 * rate))
                if score < min_match:
                    continue  # cut short by an interruption, or not heard
                heard = float(session.heard_time(found))
                guess, before, prev_wt = found, 0.15 * rate, wt
                if i in sched:
                    due = sched[i] - lead  # when the word's first mouth shape is due on screen
                    shown = _first_frame_at(frames, due)
                    out["ours"].append(shown - heard)
                    predicted = due - c["scheduled"]["shift"]
                    out["predicted"].append(_first_frame_at(frames, predicted) - heard)
                    out["stats"].append(_first_frame_at(frames, predicted - learned) - heard)
                    out["budget"].append(_budget(c, wt, sched[i], lead, shown, heard, first_word))
                    first_word = first_word or (sched[i], heard)
                out["text"].append(_first_frame_at(frames, c["arrival"] + c["textOnly"][i]) - heard)
                near = opens[(opens >= heard - 100) & (opens <= heard + 300)]
                out["energy"].append(float(near[np.argmin(np.abs(near - heard))] - heard)
                                     if len(near) else np.nan)
    return out


BUDGET_PARTS = {
    "message": "message ahead of its word's audio (heard − arrival; < 0: the word was heard "
               "before its message came)",
    "delay_error": "receive delay: the page's estimate − the one observed (a chunk's first word, "
                   "anchored chunks)",
    "prediction": "where the word was placed when its message came − where it was heard (a "
                  "chained chunk's place includes the turn's corrections before it)",
    "onset": "onset correction of the chunk's start (its shift: heard onset − prediction)",
    "later": "later corrections of the chunk (pauses heard longer or shorter, holes, the "
             "jitter buffer squeezing or stretching the audio)",
    "within": "within the chunk: scheduled − heard distance from its first word (model "
              "durations vs playout that stretches or squeezes the audio)",
    "scheduled": "scheduled − heard, after all corrections",
    "lead": "mouth lead: shapes shown this much before their sound (web/src/lipsync/scheduler.ts)",
    "frame": "frame quantisation: shown − due",
}


def _budget(c: dict, wt: float, scheduled: float, lead: float, shown: float, heard: float,
            first_word: tuple[float, float] | None) -> dict[str, float]:
    """One word's offset split into its parts (ms): ``scheduled`` + ``lead`` + ``frame`` = the
    offset; ``prediction`` + ``onset`` + ``later`` = ``scheduled`` (``later`` is the chunk's, the
    same for all its words); the others explain the prediction. ``scheduled``: when the page
    expects the word to be heard; ``lead``: how much earlier it shows the word's shape."""
    sc, m = c["scheduled"], c["msg"]
    observed_delay = heard - (c["arrival"] + m["lead_ms"] + wt)
    return {
        "message": heard - c["arrival"],
        "delay_error": (c["receiveDelay"] - observed_delay
                        if sc["anchored"] and first_word is None else np.nan),
        "prediction": scheduled - sc["shift"] - sc["drift"] - heard,
        "onset": sc["shift"],
        "later": sc["drift"],
        "within": ((scheduled - first_word[0]) - (heard - first_word[1])
                   if first_word is not None else np.nan),
        "scheduled": scheduled - heard,
        "lead": -lead,
        "frame": shown - (scheduled - lead),
    }


def budget_rows(budget: list[dict[str, float]]) -> list[str]:
    """The error budget as markdown rows: each part's words, p50 and p5 … p95."""
    rows = ["| part of the offset (ours, ms) | words | p50 | p5 … p95 |", "|---|---|---|---|"]
    for key, label in BUDGET_PARTS.items():
        a = np.array([b[key] for b in budget], dtype=np.float64)
        a = a[~np.isnan(a)]
        if not len(a):
            rows.append(f"| {label} | 0 | n/a | n/a |")
            continue
        p5, p50, p95 = np.percentile(a, [5, 50, 95])
        rows.append(f"| {label} | {len(a)} | {p50:+.0f} | {p5:+.0f} … {p95:+.0f} |")
    return rows


def summarize(offsets: list[float]) -> dict:
    a = np.array(offsets, dtype=np.float64)
    found = a[~np.isnan(a)]
    inside = (found >= WINDOW_MS[0]) & (found <= WINDOW_MS[1])
    return {"words": len(a), "matched": len(found),
            "p50": float(np.percentile(found, 50)) if len(found) else np.nan,
            "p95_abs": float(np.percentile(np.abs(found), 95)) if len(found) else np.nan,
            "p5": float(np.percentile(found, 5)) if len(found) else np.nan,
            "p95": float(np.percentile(found, 95)) if len(found) else np.nan,
            "in_window": float(inside.sum() / len(a)) if len(a) else np.nan}
