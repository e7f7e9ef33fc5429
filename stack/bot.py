"""Bot sessions: one Pipecat pipeline per conversation, all sharing the process's models.

With LiveKit, ``BotManager.ensure(room)`` puts a bot in a room (the HTTP server calls it when it
issues a token). With SmallWebRTC, ``BotManager.answer(offer)`` starts a conversation on a new
peer connection with the browser that sent the offer. A session ends when its person leaves (or
never comes), when nobody speaks for ``SESSION_IDLE_SECONDS``, or when the manager stops; it then
frees its pipeline, tasks and connection.

Sharing the models between sessions: the LLM decodes up to LLM_PARALLEL conversations together
(stack/engines/llm_batch.py), Kokoro synthesises one chunk at a time, Whisper (CTranslate2)
serves concurrent requests itself; see docs/design.md. At most MAX_CONVERSATIONS sessions run at
once: ``ensure`` refuses another (``AtCapacity``, a 503 with Retry-After at the HTTP API).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from livekit import api as lkapi
from pipecat.frames.frames import ErrorFrame, MetricsFrame
from pipecat.metrics.metrics import ProcessingMetricsData, TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.livekit.transport import LiveKitParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.workers.runner import WorkerRunner

from . import metrics
from .config import Settings
from .engines.load import Engines
from .memory import return_freed_memory
from .pipeline import Conversation, build_pipeline
from .server import AtCapacity
from .transport import (
    MIC_SAMPLE_RATE,
    AvatarLiveKitTransport,
    AvatarSmallWebRTCTransport,
    awaiting_hidden_hosts,
)

log = logging.getLogger(__name__)

BOT_IDENTITY = "avatar-bot"


def bot_token(settings: Settings, room: str) -> str:
    grants = lkapi.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                               can_publish_data=True, can_publish_sources=["microphone"],
                               agent=True)
    return (lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
            .with_identity(BOT_IDENTITY).with_name("Avatar").with_kind("agent")
            .with_grants(grants).with_ttl(BOT_TOKEN_TTL).to_jwt())


class MetricsObserver(BaseObserver):
    """Feeds stack/metrics.py from one conversation: each stage's time from the services'
    own Pipecat metrics, and errors by the service that reported them."""

    _STAGES = {("stt", ProcessingMetricsData): "stt", ("llm", TTFBMetricsData): "llm_first_token",
               ("tts", TTFBMetricsData): "tts_first_audio"}

    def __init__(self):
        super().__init__(observe_every_push=False)  # each frame once, wherever it travels

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, MetricsFrame):
            for m in frame.data:
                stage = self._STAGES.get((metrics.source_of(m.processor), type(m)))
                if stage is not None and m.value > 0:
                    metrics.STAGE.labels(stage).observe(m.value)
        elif isinstance(frame, ErrorFrame):
            name = frame.processor.name if frame.processor is not None else ""
            metrics.ERRORS.labels(metrics.source_of(name)).inc()


def observe(worker: PipelineWorker) -> None:
    """Attach the process's metrics to a conversation's worker."""
    worker.add_observer(MetricsObserver())
    latency = UserBotLatencyObserver()

    @latency.event_handler("on_latency_measured")
    async def _voice_to_voice(_observer, seconds: float):
        metrics.VOICE_TO_VOICE.observe(seconds)

    worker.add_observer(latency)
    turns = worker.turn_tracking_observer
    if turns is not None:
        @turns.event_handler("on_turn_ended")
        async def _turn(_observer, _number, _duration, interrupted: bool):
            metrics.TURNS.labels(str(bool(interrupted)).lower()).inc()


PipelineBuilder = Callable[..., Conversation]


JOIN_TIMEOUT_S = 15  # ensure() waits this long for the bot to be in its room
STOP_TIMEOUT_S = 10  # stop() waits this long for a session to end, then cancels its task
EMPTY_POLL_S = 0.5  # how often a session checks whether anyone is left in its room
BOT_TOKEN_TTL = timedelta(hours=6)  # the bot's own LiveKit token; sessions end long before


class BotSession:
    """One conversation: its pipeline on ``transport``, the watchdog that ends it when its person
    is gone, and its run loop. ``on_end`` is called once it has ended. A subclass per transport
    says who is there (``people``) and connects the transport's own leave events."""

    def __init__(self, settings: Settings, key: str, transport, builder: PipelineBuilder,
                 on_end: Callable[[BotSession], None]):
        self.settings, self.key, self.transport, self._on_end = settings, key, transport, on_end
        self.conversation = builder(transport_input=self.transport.input(),
                                    transport_output=self.transport.output())
        self.worker = PipelineWorker(
            self.conversation.pipeline,
            params=PipelineParams(audio_in_sample_rate=MIC_SAMPLE_RATE, audio_out_sample_rate=24000,
                                  enable_metrics=True, enable_usage_metrics=True),
            enable_rtvi=True,
            idle_timeout_secs=settings.session_idle_seconds,
            cancel_on_idle_timeout=True,
        )
        observe(self.worker)
        self.runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        self.joined = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"bot:{self.key}")
        # Once the task is done its frame, and with it the pipeline, is gone: trim then.
        self.task.add_done_callback(lambda _task: asyncio.get_running_loop().run_in_executor(
            None, return_freed_memory))
        metrics.CONVERSATIONS_STARTED.inc()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def people(self) -> list[str]:
        raise NotImplementedError

    async def stop(self, reason: str = "stopped") -> None:
        if not self.running:
            return
        await self.worker.cancel(reason=reason)
        try:
            await asyncio.wait_for(self.task, timeout=STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.task.cancel()

    async def _end_when_empty(self) -> None:
        """Also catches a person who left without the transport telling (no event then), and
        one who never came."""
        loop = asyncio.get_running_loop()
        started = empty_since = loop.time()
        limit = self.settings.session_empty_seconds
        while True:
            await asyncio.sleep(EMPTY_POLL_S)
            if not self.joined.is_set() and loop.time() - started < JOIN_TIMEOUT_S + limit:
                continue
            if self.people():
                empty_since = None
            elif empty_since is None:
                empty_since = loop.time()
            elif loop.time() - empty_since > limit:
                log.info("conversation %s has had nobody for %.0f s: ending it", self.key, limit)
                await self.worker.cancel(reason="nobody there")
                return

    async def _run(self) -> None:
        watchdog = asyncio.create_task(self._end_when_empty())
        try:
            await self.runner.add_workers(self.worker)
            await self.runner.run()
        except Exception:  # a broken session must not take the server down
            log.exception("bot session %s failed", self.key)
        finally:
            watchdog.cancel()
            self.joined.set()
            self._on_end(self)
            log.info("bot session %s ended", self.key)


class LiveKitSession(BotSession):
    """A conversation in a LiveKit room (``key`` is the room's name)."""

    def __init__(self, settings: Settings, room: str, builder: PipelineBuilder,
                 on_end: Callable[[BotSession], None]):
        transport = AvatarLiveKitTransport(
            settings.livekit_url, bot_token(settings, room), room,
            # LiveKit's own sender thread plays out up to a second queued here, so a busy event
            # loop (a CPU shared with the models) does not leave holes in the bot's voice; an
            # interruption clears the queue, so barge-in does not wait for it.
            params=LiveKitParams(audio_in_enabled=True, audio_out_enabled=True,
                                 audio_out_queue_size_ms=1000))
        super().__init__(settings, room, transport, builder, on_end)
        self.room = room
        self.transport.add_event_handler("on_connected", self._connected)
        self.transport.add_event_handler("on_participant_left", self._left)

    def people(self) -> list[str]:
        """Who is in the room besides the bot (nobody while the bot is not connected)."""
        try:
            return [p for p in self.transport.get_participants() if p != BOT_IDENTITY]
        except AttributeError:  # not connected (yet, or any more)
            return []

    async def _connected(self, _transport) -> None:
        self.joined.set()

    async def _left(self, _transport, _participant, _reason) -> None:
        # One person per conversation: when they leave, the session ends and frees its parts.
        if not self.people():
            log.info("the user left room %s: ending its session", self.room)
            await self.worker.cancel(reason="user left")


class PeerSession(BotSession):
    """A conversation over a direct WebRTC connection with one browser (SmallWebRTC); ``key``
    names it in the server's logs and metrics."""

    def __init__(self, settings: Settings, key: str, connection: SmallWebRTCConnection,
                 builder: PipelineBuilder, on_end: Callable[[BotSession], None]):
        transport = AvatarSmallWebRTCTransport(
            connection, TransportParams(audio_in_enabled=True, audio_out_enabled=True))
        super().__init__(settings, key, transport, builder, on_end)
        self.connection = connection
        self.transport.add_event_handler("on_client_connected", self._connected)
        self.transport.add_event_handler("on_client_disconnected", self._left)

    def people(self) -> list[str]:
        return [self.key] if self.connection.pc.connectionState == "connected" else []

    async def _connected(self, _transport, _client) -> None:
        self.joined.set()

    async def _left(self, _transport, _client) -> None:
        log.info("the browser of %s closed the connection: ending its session", self.key)
        await self.worker.cancel(reason="user left")


class BotManager:
    """``builder`` makes each session's pipeline (the product's by default; the benchmark also
    runs a reference pipeline of Pipecat's stock services through the same sessions)."""

    def __init__(self, settings: Settings, engines: Engines | None,
                 builder: PipelineBuilder | None = None):
        self.settings = settings
        self.engines = engines
        self.builder = builder or (lambda **kw: build_pipeline(self.engines, self.settings, **kw))
        self.sessions: dict[str, BotSession] = {}
        self._lock = asyncio.Lock()
        metrics.watch(lambda: len(self.active_rooms()), engines.llm if engines else None,
                      engines.tts if engines else None)

    async def ensure(self, room: str) -> BotSession:
        """The room's session, started if there is none (or the last one ended)."""
        async with self._lock:
            session = self.sessions.get(room)
            if session is not None and session.running:
                return session
            self._admit()
            session = LiveKitSession(self.settings, room, self.builder, self._forget)
            self.sessions[room] = session
            session.start()
        try:
            await asyncio.wait_for(session.joined.wait(), timeout=JOIN_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("bot for room %s has not joined after %d s", room, JOIN_TIMEOUT_S)
        return session

    async def answer(self, sdp: str, kind: str) -> dict[str, str]:
        """A new conversation on its own peer connection: the answer to the browser's ``offer``
        (``sdp``, ``type``, ``pc_id``), with every ICE candidate of the bot in it (no trickle)."""
        async with self._lock:
            self._admit()
            connection = SmallWebRTCConnection()
            try:
                await connection.initialize(sdp=awaiting_hidden_hosts(sdp), type=kind)
            except Exception as e:  # the browser's offer, parsed by aiortc: a 400, not a 500
                await connection.pc.close()
                raise ValueError(str(e) or type(e).__name__) from e
            key = f"peer-{connection.pc_id.rsplit('-', 1)[-1][:12]}"
            try:
                session = PeerSession(self.settings, key, connection, self.builder, self._forget)
            except Exception:
                await connection.pc.close()
                raise
            self.sessions[key] = session
            session.start()
        return connection.get_answer()

    def _admit(self) -> None:
        if len(self.active_rooms()) >= self.settings.conversation_limit:
            raise AtCapacity(self.settings.conversation_limit)

    def _forget(self, session: BotSession) -> None:
        if self.sessions.get(session.key) is session:  # its pipeline can be freed now
            del self.sessions[session.key]

    def in_room(self, room: str, identity: str) -> bool:
        """Whether ``identity`` is connected to ``room`` now, as the room's bot sees it."""
        session = self.sessions.get(room)
        return session is not None and session.running and identity in session.people()

    def active_rooms(self) -> list[str]:
        return [r for r, s in self.sessions.items() if s.running]

    async def stop(self, room: str) -> None:
        session = self.sessions.get(room)
        if session is not None:
            await session.stop()

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(r) for r in list(self.sessions)))
