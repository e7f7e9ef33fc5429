"""Many sessions in one bot process: ``scripts/bench.py --soak N`` runs N join/leave cycles
(tests/soak.py) through a real LiveKit server and the HTTP API, half of them leaving mid-reply,
and reports resident memory, threads and asyncio tasks at cycle 20, their maximum after it, and
at cycle N. Goal: RSS at the end within +5 % of cycle 20, the maximum within +10 %, threads and
tasks flat."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from soak import soak, summary  # noqa: E402

from stack.bot import BotManager  # noqa: E402
from stack.config import Settings  # noqa: E402
from stack.engines.load import load_engines  # noqa: E402
from stack.livekit_server import LiveKitServer, find_binary  # noqa: E402
from stack.memory import limit_arenas  # noqa: E402
from stack.server import create_app  # noqa: E402

KEY, SECRET, ACCESS = "APIsoak", "k" * 40, "soak access key"


async def _run(settings: Settings, cycles: int):
    limit_arenas()  # as `python -m stack.app` does
    livekit = LiveKitServer(find_binary(), Path(tempfile.mkdtemp(prefix="soak-")), KEY, SECRET)
    s = settings.model_copy(update=dict(
        livekit_url=livekit.url, livekit_api_key=KEY, livekit_api_secret=SECRET,
        access_key=ACCESS, rate_limit_per_minute=100_000, session_empty_seconds=2))
    manager = BotManager(s, load_engines(s))
    app = create_app(s, models_ready=lambda: True, on_conversation=manager.ensure,
                     in_room=manager.in_room)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot")

    async def start():
        r = await http.post("/token", json={}, headers={"Authorization": f"Bearer {ACCESS}"})
        r.raise_for_status()
        body = r.json()
        return body["url"], body["token"], body["room"]

    audio, sr = sf.read(s.models_dir / s.profile.sample_wav, dtype="float32")
    try:
        return await soak(cycles, start, manager.active_rooms, audio[: int(sr * 1.2)],
                          lambda x: print(f"cycle {x.cycle}: RSS {x.rss_mb:.0f} MB, "
                                          f"{x.threads} threads, {x.tasks} tasks", flush=True))
    finally:
        await manager.stop_all()
        await http.aclose()
        livekit.stop()


def run_soak_bench(settings: Settings, cycles: int) -> tuple[str, str]:
    if cycles < 21:
        raise SystemExit("--soak needs more than 20 cycles (cycle 20 is the baseline)")
    r = summary(asyncio.run(_run(settings, cycles)))
    pct = lambda v: f"{(v / r['rss_base'] - 1) * 100:+.1f} %"  # noqa: E731
    table = "\n".join([
        "| | cycle 20 | maximum after it | cycle " + str(r["cycles"]) + " |",
        "|---|---|---|---|",
        f"| RSS | {r['rss_base']:.0f} MB | {r['rss_max']:.0f} MB ({pct(r['rss_max'])}) | "
        f"{r['rss_end']:.0f} MB ({pct(r['rss_end'])}) |",
        f"| threads | {r['threads_base']} | {r['threads_max']} | {r['threads_end']} |",
        f"| asyncio tasks | {r['tasks_base']} | {r['tasks_max']} | {r['tasks_end']} |"])
    notes = (f"{r['cycles']} cycles of POST /token, join, a spoken question, leave (odd cycles "
             "as soon as the reply is heard, even ones after it); bot, HTTP API and client in "
             "one process, so these are upper bounds for the bot. Goal: end within +5 % of "
             "cycle 20, maximum within +10 %, threads and tasks flat.")
    return table, notes
