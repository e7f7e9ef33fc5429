"""The HTTP server: the one place a browser talks to besides LiveKit.

- ``POST /token``: a short-lived LiveKit token for one room, with minimal grants.
- ``GET /health``: the process is alive. ``GET /ready``: models loaded and LiveKit reachable.
- ``GET /avatars``: the avatars people can choose (every GLB in ``AVATARS_DIR``), each served at
  ``/avatars/<name>.glb``.
- ``/``: the built web client (``WEB_DIR``), so page, API and avatars share one origin.

Access control is on unless ``DEV_MODE``: the browser sends the operator's ``ACCESS_KEY`` as
``Authorization: Bearer <key>`` and never sees the LiveKit secret. Requests are validated (clear
4xx with a reason), bodies are capped, and token requests are rate-limited per client address.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from livekit import api as lkapi
from pydantic import BaseModel, Field

from .config import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
DEV_KEYS = {("devkey", "secret")}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ConfigError(RuntimeError):
    """The server refuses to start with this configuration; the message says what to change."""


class TokenRequest(BaseModel):
    room: str = Field(pattern=NAME_PATTERN, description="Room to join: letters, digits, _ . -")
    identity: str = Field(pattern=NAME_PATTERN, description="Unique participant identity.")
    name: str = Field("", max_length=64, description="Display name.")


class TokenResponse(BaseModel):
    token: str = Field(description="LiveKit access token (JWT) for this room only.")
    url: str = Field(description="LiveKit URL the browser connects to.")
    expires_in: int = Field(description="Seconds until the token expires.")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    models_loaded: bool
    livekit_reachable: bool


class Error(BaseModel):
    detail: str


class Avatar(BaseModel):
    name: str = Field(description="File name without .glb; also the display name.")
    url: str = Field(description="Where the browser fetches the GLB (same origin).")
    bytes: int = Field(description="File size, for a download progress bar.")


class AvatarList(BaseModel):
    avatars: list[Avatar]
    default: str | None = Field(description="The avatar to show first; None when there is none.")


AVATAR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def list_avatars(folder: Path) -> list[Avatar]:
    files = sorted(folder.glob("*.glb")) if folder.is_dir() else []
    return [Avatar(name=f.stem, url=f"/avatars/{f.name}", bytes=f.stat().st_size)
            for f in files if AVATAR_NAME.match(f.stem)]


class RateLimiter:
    """Sliding window per client: at most ``limit`` calls in any ``window`` seconds."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit, self.window = limit, window
        self._calls: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        calls = self._calls[client]
        while calls and now - calls[0] > self.window:
            calls.popleft()
        if len(calls) >= self.limit:
            return False
        calls.append(now)
        return True


def check_config(settings: Settings) -> None:
    if settings.dev_mode:
        return
    if (settings.livekit_api_key, settings.livekit_api_secret) in DEV_KEYS:
        raise ConfigError("LIVEKIT_API_KEY/LIVEKIT_API_SECRET are LiveKit's public dev keys; set "
                          "your own (the same as in livekit.yaml) or DEV_MODE=true")
    if len(settings.livekit_api_secret) < 32:
        raise ConfigError("LIVEKIT_API_SECRET must be at least 32 characters "
                          "(openssl rand -base64 32)")
    if not settings.access_key:
        raise ConfigError("ACCESS_KEY is not set: anyone on the network could start "
                          "conversations; set one, or DEV_MODE=true on a development machine")


def create_app(settings: Settings, *, models_ready: Callable[[], bool] = lambda: False,
               on_conversation: Callable[[str], Awaitable[None]] | None = None) -> FastAPI:
    """``on_conversation(room)`` is awaited for every token issued: it makes sure a bot is there."""
    check_config(settings)
    app = FastAPI(title="avatar-stack", version="1", summary="Token and health API of the bot")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    limiter = RateLimiter(settings.rate_limit_per_minute)

    @app.middleware("http")
    async def cap_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
        return await call_next(request)

    def authorize(request: Request) -> None:
        if settings.dev_mode and not settings.access_key:
            return
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise HTTPException(401, "missing access key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(header[7:].strip().encode(), (settings.access_key or "").encode()):
            raise HTTPException(403, "wrong access key")

    def rate_limit(request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            raise HTTPException(429, f"too many requests: at most {settings.rate_limit_per_minute} "
                                "per minute", headers={"Retry-After": "60"})

    errors = {401: {"model": Error}, 403: {"model": Error}, 413: {"model": Error},
              422: {"description": "invalid room, identity or name"}, 429: {"model": Error}}

    @app.post("/token", response_model=TokenResponse, responses=errors,
              dependencies=[Depends(rate_limit), Depends(authorize)])
    async def token(req: TokenRequest) -> TokenResponse:
        """A LiveKit token to join one room: publish microphone/camera and data, subscribe."""
        ttl = settings.token_ttl_seconds
        grants = lkapi.VideoGrants(
            room_join=True, room=req.room, can_subscribe=True, can_publish=True,
            can_publish_data=True, can_publish_sources=["microphone", "camera"],
            can_update_own_metadata=False)
        jwt = (lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
               .with_identity(req.identity).with_name(req.name or req.identity)
               .with_grants(grants).with_ttl(timedelta(seconds=ttl)).to_jwt())
        if on_conversation is not None:
            await on_conversation(req.room)
        return TokenResponse(token=jwt, url=settings.livekit_public_url or settings.livekit_url,
                             expires_in=ttl)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready():
        reachable = await livekit_reachable(settings.livekit_url)
        body = Readiness(ready=models_ready() and reachable, models_loaded=models_ready(),
                         livekit_reachable=reachable)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get("/avatars", response_model=AvatarList)
    async def avatars() -> AvatarList:
        """The avatars in AVATARS_DIR (the operator adds GLB files there)."""
        found = list_avatars(settings.avatars_path)
        names = [a.name for a in found]
        default = settings.default_avatar if settings.default_avatar in names else \
            (names[0] if names else None)
        return AvatarList(avatars=found, default=default)

    @app.get("/avatars/{file}", response_class=FileResponse, include_in_schema=False)
    async def avatar_file(file: str):
        name, dot, ext = file.rpartition(".")
        path = settings.avatars_path / file
        if ext != "glb" or not dot or not AVATAR_NAME.match(name) or not path.is_file():
            raise HTTPException(404, f"no avatar {file!r}; GET /avatars lists them")
        return FileResponse(path, media_type="model/gltf-binary")

    web = settings.web_path
    if (web / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
    else:
        log.warning("no web client at %s: build it with `npm --prefix web run build`", web)

        @app.get("/", include_in_schema=False)
        async def no_web_client():
            return JSONResponse({"detail": f"the web client is not built ({web}): run "
                                 "`npm --prefix web run build`"}, 404)

    return app


async def livekit_reachable(url: str, timeout: float = 2.0) -> bool:
    """LiveKit answers plain HTTP on its signalling port."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.get(urllib.parse.urlunsplit((scheme, parts.netloc, "/", "", "")))
            return r.status_code < 500
    except (httpx.HTTPError, asyncio.TimeoutError):
        return False


def openapi_schema() -> dict:
    """The API's OpenAPI schema (committed as docs/openapi.json; the web client is generated
    from it): ``python -m stack.server > docs/openapi.json``."""
    return create_app(Settings(dev_mode=True, _env_file=None)).openapi()


if __name__ == "__main__":
    import json

    print(json.dumps(openapi_schema(), indent=2))
