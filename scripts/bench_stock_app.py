#!/usr/bin/env python3
"""Pipecat's stock services (scripts/bench_livekit.py's reference pipeline) behind the product's
own HTTP API and web page: what `scripts/bench.py --web` compares ours with where the person is.
Benchmark only. Run like `python -m stack.app`, with the same environment (it reads the same
settings); it also starts llama-cpp-python's OpenAI-compatible server for the stock LLM service.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_livekit import _start_llama_server, _voices_npz, stock_builder  # noqa: E402

from stack.bot import BotManager  # noqa: E402
from stack.config import get_settings  # noqa: E402
from stack.memory import limit_arenas  # noqa: E402
from stack.server import create_app  # noqa: E402


def main() -> int:
    limit_arenas()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    tmp = Path(tempfile.mkdtemp(prefix="stock-app-"))
    llama, llm_url = _start_llama_server(settings, tmp)
    try:
        manager = BotManager(settings, None, builder=stock_builder(
            settings, llm_url, _voices_npz(settings, tmp)))

        async def on_conversation(room: str) -> None:
            await manager.ensure(room)

        app = create_app(settings, models_ready=lambda: True, on_conversation=on_conversation,
                         in_room=manager.in_room)
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="info")
    finally:
        llama.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
