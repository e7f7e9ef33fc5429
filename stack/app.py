"""The bot process: HTTP API + one bot per conversation, models loaded once.

    python -m stack.app          # what the container runs, and what the tests start

The models load in the background so ``/health`` answers at once; ``/ready`` turns 200 when they
are loaded and LiveKit answers (TRANSPORT=livekit). A conversation requested before then gets a
503 saying so.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from . import metrics
from .bot import BotManager
from .config import ConfigError, Settings, get_settings
from .engines.load import load_engines
from .memory import freeze_loaded_objects, limit_arenas
from .server import NotLoaded, create_app

log = logging.getLogger("stack")


def build_app(settings: Settings) -> FastAPI:
    state: dict = {"manager": None, "error": None}

    async def load():
        try:
            engines = await asyncio.to_thread(load_engines, settings)
            freeze_loaded_objects()
            state["manager"] = BotManager(settings, engines)
            log.info("models of profile %s loaded on %s", settings.model_profile, engines.device)
        except Exception as e:  # e.g. a missing model file: the message names it and the fix
            state["error"] = str(e)
            log.error("cannot load the models: %s", e)

    def manager_or_refuse() -> BotManager:
        manager: BotManager | None = state["manager"]
        if manager is None:
            raise NotLoaded(state["error"] or "models are still loading; retry shortly")
        return manager

    async def on_conversation(room: str) -> None:
        await manager_or_refuse().ensure(room)

    async def on_offer(sdp: str, kind: str) -> dict:
        return await manager_or_refuse().answer(sdp, kind)

    def in_room(room: str, identity: str) -> bool:
        manager: BotManager | None = state["manager"]
        return manager is not None and manager.in_room(room, identity)

    app = create_app(settings, models_ready=lambda: state["manager"] is not None,
                     on_conversation=on_conversation, in_room=in_room, on_offer=on_offer)
    app.state.bot = state

    @asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(load())
        lag = asyncio.create_task(metrics.watch_event_loop())
        capacity = asyncio.create_task(metrics.watch_capacity())
        yield
        task.cancel()
        lag.cancel()
        capacity.cancel()
        if state["manager"] is not None:
            await state["manager"].stop_all()

    app.router.lifespan_context = lifespan
    return app


def main() -> int:
    limit_arenas()  # before any model starts a thread: stack/memory.py
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    try:
        app = build_app(settings)
    except ConfigError as e:
        log.error("refusing to start: %s", e)
        return 2
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
