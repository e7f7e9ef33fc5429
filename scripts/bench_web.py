"""Lip-sync as a person sees it: a conversation in headless Chromium (tests/web_session.py), and
for every bot word the signed offset between its first mouth shape and its audio as heard in
the page. Three ways to drive the mouth are measured on the same words in the same run:

- ours: Kokoro's durations, placed at arrival + lead_ms + receive delay and corrected by the
  heard onset of each anchored chunk (web/src/lipsync/scheduler.ts);
- ours, prediction only: the same without the onset correction of the turn's start;
- ours, prediction by the stats alone: that prediction also without the receive delay's
  correction learned from earlier onsets (web/src/lipsync/receiveDelay.ts);
- TalkingHead's text-only lip-sync of the same words, started when the message arrives;
- audio energy: the mouth opens when the level of the heard audio crosses a threshold.

Beside it, the response time at the page (its latency panel), ours and Pipecat's stock services
(scripts/bench_stock_app.py) behind the same API and page.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import event_loop_lag  # noqa: E402
from web_session import (  # noqa: E402
    BOT_ARGS,
    SHARED_AVATARS,
    WINDOW_MS,
    BotProcess,
    budget_rows,
    frame_grids,
    kokoro_reference,
    lip_sync_offsets,
    run_session,
    summarize,
    write_mic_wav,
)

from stack.config import Settings  # noqa: E402
from stack.engines.load import load_engines  # noqa: E402
from stack.livekit_server import LiveKitServer, find_binary, free_port  # noqa: E402

KEY, SECRET = "APIbench", "b" * 40
QUESTION = "Can you tell me a short story about a friendly robot?"
METHODS = {"ours": "ours (model durations, heard-onset anchor)",
           "predicted": "ours, prediction only (no onset correction of the turn start)",
           "stats": "ours, prediction by WebRTC's stats alone (no onset correction, none learned)",
           "text": "TalkingHead text-only lip-sync, from message arrival",
           "energy": "audio energy threshold (mouth opens on the level)"}


def run_web_bench(settings: Settings, talk_s: int, stock: bool = True,
                  dump_to: Path | None = None, transport: str = "livekit") -> tuple[str, str]:
    """``stock``: also the response time of Pipecat's stock services (a second session; LiveKit
    only); ``dump_to``: every word's offset parts (the error budget) as JSON, for a closer look;
    ``transport``: how the page reaches the bot (TRANSPORT: livekit, or smallwebrtc with no
    LiveKit server at all)."""
    engines = load_engines(settings)
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    voice = np.concatenate([c.audio for c in engines.tts.synthesize(QUESTION, voice="am_michael")])
    write_mic_wav(tmp / "q.wav", voice, 24000, lead_s=0.5, tail_s=25)
    livekit = LiveKitServer(find_binary(), tmp, KEY, SECRET) if transport == "livekit" else None
    env = {"MODEL_PROFILE": settings.model_profile, "MODELS_DIR": str(settings.models_dir),
           "DEVICE": settings.device, "DEV_MODE": "true", "TRANSPORT": transport,
           "LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET,
           "AVATARS_DIR": str(SHARED_AVATARS), "DEFAULT_AVATAR": "brunette-t",
           **({"LIVEKIT_URL": livekit.url} if livekit else {})}
    stock = stock and transport == "livekit"
    sessions = {}
    load = [os.getloadavg()[0]]
    try:
        # ours, then Pipecat's stock services behind the same API and page (no timing messages:
        # the page measures their replies' response time, not their lip-sync)
        runs = [("ours", BOT_ARGS)] + ([("stock Pipecat", ("scripts/bench_stock_app.py",))]
                                       if stock else [])
        for name, args in runs:
            bot = BotProcess(env, free_port(), tmp / f"{name.split()[0]}.log", args=args)
            try:
                bot.wait_ready()
                sessions[name] = run_session(bot.url, tmp / "q.wav",
                                             tmp / f"session-{name.split()[0]}", talk_s,
                                             typed_chat=name == "ours")
                if name == "ours":
                    lag = event_loop_lag(bot.url)
            finally:
                bot.stop()
            load.append(os.getloadavg()[0])
    finally:
        if livekit is not None:
            livekit.stop()
    session = sessions["ours"]

    reference = kokoro_reference(engines.tts)  # one synthesis per turn, for both frame grids

    rows = ["| mouth driven by | shown on | words | p50 (ms) | p5 … p95 (ms) | inside IS-191 |",
            "|---|---|---|---|---|---|"]
    budgets = {}
    for grid, frames in frame_grids(session).items():
        offsets = lip_sync_offsets(session, reference, frames)
        budgets[grid] = offsets["budget"]
        for key, label in METHODS.items():
            s = summarize(offsets[key])
            matched = (f"{s['matched']}/{s['words']}" if s["matched"] != s["words"]
                       else str(s["words"]))
            rows.append(f"| {label} | {grid} | {matched} | {s['p50']:+.0f} | {s['p5']:+.0f} … "
                        f"{s['p95']:+.0f} | {s['in_window']:.0%} |")
    rows += ["", "Where the offsets come from (ours, 60 Hz display): "
             "scheduled + lead + frame = the offset; prediction + onset + later = scheduled.", ""]
    rows += budget_rows(budgets["60 Hz display"])
    if dump_to is not None:
        dump_to.parent.mkdir(parents=True, exist_ok=True)
        dump_to.write_text(json.dumps({"session": str(session.out), **budgets}, indent=0))
    # Response time where the person is: the page's own latency panel (end of their speech by
    # the microphone level -> the first audible sample of the reply), the last ten turns.
    rows += ["", "| response time at the page | turns | p50 (ms) | p95 (ms) |", "|---|---|---|---|"]
    for name, run in sessions.items():
        response = [t["responseMs"] for t in run.result.get("snapshot", {}).get("latencies", [])
                    if t.get("responseMs") is not None]
        figures = (f"{np.percentile(response, 50):.0f} | {np.percentile(response, 95):.0f}"
                   if response else "n/a | n/a")
        rows.append(f"| {name}, the page's latency panel | {len(response)} | {figures} |")
    fps = 1000 / np.median(np.diff(frame_grids(session)["frames rendered here"]))
    moves = session.result.get("stretches", [])
    concealed = sum(m.get("concealedMs", 0) for m in moves)
    notes = (f"Offset = mouth shape shown − audio heard, per bot word (+ = mouth late). Audio "
             f"heard: each word found on its own in the page's recording of the received track "
             f"by correlation with Kokoro's audio for it (re-synthesized: Kokoro is "
             f"deterministic), so holes and stretched pauses in the heard audio count. "
             f"IS-191 window: "
             f"{WINDOW_MS[0]:+.0f} … {WINDOW_MS[1]:+.0f} ms. Energy: words whose audio raises no "
             f"level onset count as outside. This browser rendered {fps:.0f} frames/s "
             f"(software WebGL on a CPU the bot shares); \"60 Hz display\" shows each shape on the "
             f"next frame of a 60 Hz display instead, as a machine with a GPU does. The jitter "
             f"buffer moved a live turn's schedule {len(moves)} times: "
             f"{sum(m['byMs'] for m in moves) - concealed:+.0f} ms squeezed/stretched and "
             f"{concealed:.0f} ms of late voice filled in audibly, in all (followed by the page: "
             f"web/src/lipsync/receiveDelay.ts PlayoutStretch). Response "
             f"time: the page's latency panel, {talk_s} s of conversation "
             + ("per pipeline (ours, then stock Pipecat's services behind the same API and "
                "page), one after the other; " if stock else "(ours only); ")
             + f"load average (1 min) {' → '.join(f'{x:.1f}' for x in load)} on "
             f"{os.cpu_count()} cores shared by the browser, " + (
                 "LiveKit and the bot." if livekit else "and the bot (no LiveKit: SmallWebRTC).")
             + f" {lag}")
    return "\n".join(rows), notes
