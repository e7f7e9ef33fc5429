"""The HTTP server: the one place a browser talks to besides LiveKit.

- ``GET /config``: how this server takes conversations (``TRANSPORT``), so the page knows which
  of the two calls below to make.
- ``POST /token`` (LiveKit): starts a conversation in a new room the server names (unguessable),
  for one person it also names, and returns a short-lived LiveKit token with minimal grants and a
  ``resume`` key; only that key gets another token for the same room, and not while its person
  is still in it. Knowing a room's name is not enough to listen in or take over.
- ``POST /webrtc/offer`` (SmallWebRTC): starts a conversation on a direct WebRTC connection
  between the browser and the bot: the browser's SDP offer in, the bot's answer out (both with
  all their ICE candidates: no trickle). The same access key, rate limit and 503 as ``/token``.
- ``GET /webrtc/ice-servers`` (SmallWebRTC): the stack's TURN relay with credentials of its own
  (stack/ice.py), asked for before the offer; behind the access key.
- ``GET /health``: the process is alive. ``GET /ready``: models loaded and LiveKit reachable
  (when TRANSPORT is livekit).
- ``GET /avatars``: the avatars people can choose (every GLB in ``AVATARS_DIR``), each served at
  ``/avatars/<name>.glb``.
- ``/``: the built web client (``WEB_DIR``), so page, API and avatars share one origin.

Access control is on unless ``DEV_MODE``: the browser sends the operator's ``ACCESS_KEY`` as
``Authorization: Bearer <key>`` and never sees the LiveKit secret. Requests are validated (clear
4xx with a reason), bodies are capped, and conversation requests are rate-limited per client
address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from livekit import api as lkapi
from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import metrics
from .config import Settings, check_config
from .engines.tts import VoiceBank
from .ice import ice_servers

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
# A browser's offer: audio + data channel and its ICE candidates, 2-5 KB. Its body may be up to
# six times the SDP's length (JSON escapes a control character as \u00XX), so a too-long SDP is
# a 422 that says so rather than the body cap's 413.
MAX_SDP_CHARS = 16384
MAX_OFFER_BYTES = 6 * MAX_SDP_CHARS + 1024
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class NewConversation(BaseModel):
    """Start a new conversation."""
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=64, description="Display name.")


class Rejoin(NewConversation):
    """Another token for a conversation this browser started."""
    room: str = Field(pattern=NAME_PATTERN, description="The conversation's `room`.")
    resume: str = Field(min_length=1, max_length=128,
                        description="The `resume` key /token returned with `room`.")


class TokenResponse(BaseModel):
    token: str = Field(description="LiveKit access token (JWT) for this room only.")
    url: str = Field(description="LiveKit URL the browser connects to.")
    expires_in: int = Field(description="Seconds until the token expires.")
    room: str = Field(description="The conversation's room, named by the server.")
    identity: str = Field(description="This person's identity in it, named by the server.")
    resume: str = Field(description="Secret key that gets another token for this room "
                                    "(keep it in the page; it is never shown again).")


class ClientConfig(BaseModel):
    transport: Literal["livekit", "smallwebrtc"] = Field(
        description="`livekit`: POST /token, then join the LiveKit room; `smallwebrtc`: POST "
        "/webrtc/offer with this browser's own RTCPeerConnection.")


class Offer(BaseModel):
    """The browser's SDP offer, after ICE gathering (all candidates in it)."""
    model_config = ConfigDict(extra="forbid")
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS,
                     description="Session description: an audio section whose first track is "
                     "the microphone (the bot's voice comes back on it) and a data channel.")
    type: Literal["offer"]

    @field_validator("sdp")
    @classmethod
    def _audio_and_data(cls, sdp: str) -> str:
        sections = [line.split()[0] for line in sdp.splitlines() if line.startswith("m=")]
        if not sections or sections[0] != "m=audio":
            raise ValueError("the first media section must be audio (the microphone)")
        if "m=application" not in sections:
            raise ValueError("the offer has no data channel (transcripts and lip-sync timings "
                             "travel on it)")
        return sdp


class IceServer(BaseModel):
    urls: list[str] = Field(description="TURN URLs of the stack's coturn (UDP and TCP).")
    username: str = Field(description="Time-limited: `<expiry, Unix seconds>:<id>`.")
    credential: str


class IceServers(BaseModel):
    ice_servers: list[IceServer] = Field(
        description="For the browser's RTCPeerConnection (`iceServers`); empty without TURN_HOST "
        "(the bot's own addresses must then be reachable: one machine or a LAN).")
    expires_in: int = Field(description="Seconds the credentials stay valid (TURN_TTL_SECONDS).")


class Answer(BaseModel):
    sdp: str = Field(description="The bot's session description, with its ICE candidates.")
    type: Literal["answer"]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    models_loaded: bool
    livekit_reachable: bool | None = Field(description="None when TRANSPORT is not livekit.")


class Error(BaseModel):
    detail: str = Field(description="What went wrong and what to do, in plain words.")
    code: Literal["busy", "loading"] | None = Field(
        None, description="For a client to act on, not the words: `busy` = every conversation "
        "this server takes is in use (retry after `Retry-After` seconds); `loading` = the models "
        "are not loaded yet.")


class AtCapacity(Exception):
    """A new conversation would exceed MAX_CONVERSATIONS: the answer is 503 and Retry-After."""

    def __init__(self, limit: int, retry_after: int = 30):
        super().__init__(f"all avatars are busy: this server holds {limit} conversation"
                         f"{'s' if limit != 1 else ''} at once and all are in use; try again in "
                         f"{retry_after} seconds")
        self.retry_after = retry_after


class NotLoaded(Exception):
    """The models are not loaded (yet, or they failed: the message says which)."""

    retry_after = 10


class Avatar(BaseModel):
    name: str = Field(description="File name without .glb; also the display name.")
    url: str = Field(description="Where the browser fetches the GLB (same origin).")
    bytes: int = Field(description="File size, for a download progress bar.")


class AvatarList(BaseModel):
    avatars: list[Avatar]
    default: str | None = Field(description="The avatar to show first; None when there is none.")


class VoiceList(BaseModel):
    voices: list[str] = Field(description="The voices of the active model profile; the page "
                              "picks one with the RTVI client message `set-voice`.")
    default: str = Field(description="The voice a conversation starts with (TTS_VOICE, else "
                         "the profile's).")


AVATAR_NAME = re.compile(NAME_PATTERN)


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


@dataclass
class _Owner:
    identity: str
    resume_hash: bytes
    last_used: float


class Conversations:
    """The rooms this server has named, each with its one person and the hash of the key that
    lets the same browser back in. Forgotten after ``ttl`` seconds without a token request (a
    token lasts TOKEN_TTL_SECONDS; LiveKit renews it for someone connected), at most ``limit``
    kept, oldest dropped first."""

    def __init__(self, ttl: float, limit: int = 10_000):
        self.ttl, self.limit = ttl, limit
        self._owners: dict[str, _Owner] = {}

    @staticmethod
    def _hash(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    def _prune(self, now: float) -> None:
        for room in [r for r, o in self._owners.items() if now - o.last_used > self.ttl]:
            del self._owners[room]
        while len(self._owners) >= self.limit:
            del self._owners[next(iter(self._owners))]  # dicts keep insertion order

    def new(self) -> tuple[str, str, str]:
        """A new conversation: (room, identity, resume key), all unguessable."""
        now = time.monotonic()
        self._prune(now)
        room = f"talk-{secrets.token_urlsafe(12)}"
        identity = f"person-{secrets.token_hex(4)}"
        key = secrets.token_urlsafe(24)
        self._owners[room] = _Owner(identity, self._hash(key), now)
        return room, identity, key

    def owner(self, room: str, key: str) -> str | None:
        """The identity of ``room``'s person if ``key`` is its resume key, else None."""
        owner = self._owners.get(room)
        if owner is None or not hmac.compare_digest(owner.resume_hash, self._hash(key)):
            return None
        owner.last_used = time.monotonic()
        return owner.identity

    def __contains__(self, room: str) -> bool:
        return room in self._owners

    def forget(self, room: str) -> None:
        self._owners.pop(room, None)


def create_app(settings: Settings, *, models_ready: Callable[[], bool] = lambda: False,
               on_conversation: Callable[[str], Awaitable[None]] | None = None,
               in_room: Callable[[str, str], bool] | None = None,
               on_offer: Callable[[str, str], Awaitable[dict]] | None = None) -> FastAPI:
    """``on_conversation(room)`` is awaited for every token issued: it makes sure a bot is there.
    ``in_room(room, identity)`` says whether that person is connected to the room now.
    ``on_offer(sdp, type)`` starts a SmallWebRTC conversation and returns the bot's answer."""
    check_config(settings)
    conversations = Conversations(ttl=settings.token_ttl_seconds + settings.session_idle_seconds)
    app = FastAPI(title="avatar-stack", version="1", summary="Token and health API of the bot")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    limiter = RateLimiter(settings.rate_limit_per_minute)

    @app.middleware("http")
    async def cap_body(request: Request, call_next):
        length = request.headers.get("content-length")
        cap = MAX_OFFER_BYTES if request.url.path == "/webrtc/offer" else MAX_BODY_BYTES
        if length is not None and (not length.isdigit() or int(length) > cap):
            return JSONResponse({"detail": f"request body over {cap} bytes"}, 413)
        return await call_next(request)

    def authorize(request: Request) -> None:
        if settings.dev_mode and not settings.access_key:
            return
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise HTTPException(401, "missing access key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})
        given, expected = header[7:].strip().encode(), (settings.access_key or "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(403, "wrong access key")

    def rate_limit(request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            raise HTTPException(429, f"too many requests: at most {settings.rate_limit_per_minute} "
                                "per minute", headers={"Retry-After": "60"})

    def uses(transport: str) -> Callable[[], None]:
        def check() -> None:
            if settings.transport != transport:
                other = "POST /token" if settings.transport == "livekit" else "POST /webrtc/offer"
                raise HTTPException(404, f"this server takes conversations over "
                                    f"{settings.transport} (TRANSPORT): {other}")
        return check

    def refused(e: AtCapacity | NotLoaded) -> JSONResponse:
        code = "busy" if isinstance(e, AtCapacity) else "loading"
        metrics.CONVERSATIONS_REFUSED.labels(code).inc()
        return JSONResponse(Error(detail=str(e), code=code).model_dump(), 503,
                            headers={"Retry-After": str(e.retry_after)})

    errors = {400: {"model": Error, "description": "unreadable body"},
              401: {"model": Error}, 403: {"model": Error},
              404: {"model": Error}, 409: {"model": Error}, 413: {"model": Error},
              422: {"description": "invalid name, room or resume key, or other fields"},
              429: {"model": Error},
              503: {"model": Error, "description": "`code` busy: every conversation this "
                    "server takes (MAX_CONVERSATIONS) is in use, retry after `Retry-After` "
                    "seconds; `code` loading: the models are not loaded yet",
                    "headers": {"Retry-After": {"description": "seconds",
                                                "schema": {"type": "integer"}}}}}

    @app.post("/token", response_model=TokenResponse, responses=errors,
              dependencies=[Depends(uses("livekit")), Depends(rate_limit), Depends(authorize)])
    async def token(req: Rejoin | NewConversation) -> TokenResponse:
        """A conversation of one's own: without `room`, a new room with a bot in it; with
        `room` and its `resume` key, another token for the same person in that room (not while
        they are still connected to it). The token allows publishing microphone, camera and
        data, and subscribing, in that room only."""
        if not isinstance(req, Rejoin):
            room, identity, key = conversations.new()
        else:
            if req.room not in conversations:
                raise HTTPException(404, "no such conversation (it ended, or this server "
                                    "restarted): start a new one")
            identity = conversations.owner(req.room, req.resume)
            if identity is None:
                raise HTTPException(403, "this conversation belongs to someone else")
            if in_room is not None and in_room(req.room, identity):
                raise HTTPException(409, "this conversation is already open (in another tab "
                                    "or window): close that one first")
            room, key = req.room, req.resume
        ttl = settings.token_ttl_seconds
        grants = lkapi.VideoGrants(
            room_join=True, room=room, can_subscribe=True, can_publish=True,
            can_publish_data=True, can_publish_sources=["microphone", "camera"],
            can_update_own_metadata=False)
        jwt = (lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
               .with_identity(identity).with_name(req.name or "Guest")
               .with_grants(grants).with_ttl(timedelta(seconds=ttl)).to_jwt())
        if on_conversation is not None:
            try:
                await on_conversation(room)
            except (AtCapacity, NotLoaded) as e:
                if not isinstance(req, Rejoin):
                    conversations.forget(room)  # nobody got its key
                return refused(e)
        return TokenResponse(token=jwt, url=settings.livekit_public_url or settings.livekit_url,
                             expires_in=ttl, room=room, identity=identity, resume=key)

    @app.post("/webrtc/offer", response_model=Answer, responses=errors,
              dependencies=[Depends(uses("smallwebrtc")), Depends(rate_limit),
                            Depends(authorize)])
    async def webrtc_offer(offer: Offer):
        """A new conversation over a direct WebRTC connection with the bot (TRANSPORT=
        smallwebrtc): the answer to this browser's offer. Non-trickle: gather ICE before
        sending the offer. The bot's voice arrives on the offer's first audio section; lip-sync
        timings and RTVI messages on its data channel, as with LiveKit (docs/protocol.md)."""
        if on_offer is None:
            raise HTTPException(503, "this server runs no bot")
        try:
            answer = await on_offer(offer.sdp, offer.type)
        except (AtCapacity, NotLoaded) as e:
            return refused(e)
        except ValueError as e:  # aiortc could not take the offer (e.g. no common codec)
            raise HTTPException(400, f"the offer cannot be answered: {e}") from e
        return Answer(sdp=answer["sdp"], type=answer["type"])

    @app.get("/webrtc/ice-servers", response_model=IceServers,
             responses={k: errors[k] for k in (401, 403, 404)},
             dependencies=[Depends(uses("smallwebrtc")), Depends(authorize)])
    async def webrtc_ice_servers() -> IceServers:
        """The TURN relay for a direct connection (TRANSPORT=smallwebrtc), with credentials of
        its own: ask before making the offer, so that its candidates include the relayed ones
        (a browser behind NAT or a strict firewall reaches the bot through it)."""
        return IceServers(ice_servers=[IceServer(**s) for s in ice_servers(settings)],
                          expires_in=settings.turn_ttl_seconds)

    @app.get("/config", response_model=ClientConfig)
    async def client_config() -> ClientConfig:
        """What the page needs to know before it starts a conversation."""
        return ClientConfig(transport=settings.transport)

    @app.get("/metrics", response_class=Response, dependencies=[Depends(authorize)],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"},
                        401: {"model": Error}, 403: {"model": Error}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of this process: conversations, turns, voice to voice and each
        stage as histograms, LLM tokens, batch sizes and queue waits, errors by service. Needs
        the access key like the rest of the API (Prometheus: `authorization: {credentials:
        <ACCESS_KEY>}`)."""
        return Response(metrics.scrape(), media_type=metrics.CONTENT_TYPE)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready():
        reachable = (await livekit_reachable(settings.livekit_url)
                     if settings.transport == "livekit" else None)
        body = Readiness(ready=models_ready() and reachable is not False,
                         models_loaded=models_ready(), livekit_reachable=reachable)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get("/avatars", response_model=AvatarList)
    async def avatars() -> AvatarList:
        """The avatars in AVATARS_DIR (the operator adds GLB files there)."""
        found = list_avatars(settings.avatars_path)
        names = [a.name for a in found]
        default = settings.default_avatar if settings.default_avatar in names else \
            (names[0] if names else None)
        return AvatarList(avatars=found, default=default)

    @app.get("/voices", response_model=VoiceList)
    async def voices() -> VoiceList:
        """The voices a person can choose between (they apply from the bot's next reply)."""
        profile = settings.profile
        return VoiceList(voices=VoiceBank(settings.models_dir / profile.voices_dir).names(),
                         default=settings.tts_voice or profile.default_voice)

    @app.get("/avatars/{file}", response_class=FileResponse, include_in_schema=False)
    async def avatar_file(file: str):
        name, dot, ext = file.rpartition(".")
        path = settings.avatars_path / file
        if ext != "glb" or not dot or not AVATAR_NAME.match(name) or not path.is_file():
            raise HTTPException(404, f"no avatar {file!r}; GET /avatars lists them")
        return FileResponse(path, media_type="model/gltf-binary")

    web = settings.web_path
    if (web / "index.html").is_file():
        # The router's fallback rather than a mount at "/": a mount would answer every path,
        # so OPTIONS /token got the files' 405 "Allow: GET, HEAD" instead of the API's own.
        app.router.default = StaticFiles(directory=web, html=True)
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
