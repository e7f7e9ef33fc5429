"""Bot sessions: one Pipecat pipeline per LiveKit room, all sharing the process's models.

``BotManager.ensure(room)`` puts a bot in a room (the HTTP server calls it when it issues a
token). A session ends when its user leaves, when nobody speaks for ``SESSION_IDLE_SECONDS``, or
when the manager stops; it then frees its pipeline, tasks and LiveKit connection.

Sharing the models between sessions: the LLM decodes up to LLM_PARALLEL conversations together
(stack/engines/llm_batch.py), Kokoro synthesises one chunk at a time, Whisper (CTranslate2)
serves concurrent requests itself; see docs/design.md. At most MAX_CONVERSATIONS sessions run at
once: ``ensure`` refuses another (``AtCapacity``, a 503 with Retry-After at the HTTP API).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from livekit import api as lkapi
from pipecat.frames.frames import ErrorFrame, MetricsFrame
from pipecat.metrics.metrics import ProcessingMetricsData, TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.livekit.transport import LiveKitParams
from pipecat.workers.runner import WorkerRunner

from . import metrics
from .config import Settings
from .engines.load import Engines
from .memory import return_freed_memory
from .pipeline import Conversation, build_pipeline
from .server import AtCapacity
from .transport import AvatarLiveKitTransport

log = logging.getLogger(__name__)

BOT_IDENTITY = "avatar-bot"


def bot_token(settings: Settings, room: str) -> str:
    grants = lkapi.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                               can_publish_data=True, can_publish_sources=["microphone"],
                               agent=True)
    return (lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
            .with_identity(BOT_IDENTITY).with_name("Avatar").with_kind("agent")
            .with_grants(grants).with_ttl(timedelta(hours=6)).to_jwt())


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


@dataclass
class BotSession:
    room: str
    conversation: Conversation
    worker: PipelineWorker
    runner: WorkerRunner
    transport: AvatarLiveKitTransport | None = None
    task: asyncio.Task | None = None
    joined: asyncio.Event = field(default_factory=asyncio.Event)


PipelineBuilder = Callable[..., Conversation]


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
        metrics.watch(lambda: len(self.active_rooms()), engines.llm if engines else None)

    async def ensure(self, room: str) -> BotSession:
        """The room's session, started if there is none (or the last one ended)."""
        async with self._lock:
            session = self.sessions.get(room)
            if session is not None and session.task is not None and not session.task.done():
                return session
            if len(self.active_rooms()) >= self.settings.conversation_limit:
                metrics.CONVERSATIONS_REFUSED.labels("busy").inc()
                raise AtCapacity(self.settings.conversation_limit)
            session = self._start(room)
            self.sessions[room] = session
        try:
            await asyncio.wait_for(session.joined.wait(), timeout=15)
        except asyncio.TimeoutError:
            log.warning("bot for room %s has not joined after 15 s", room)
        return session

    def _start(self, room: str) -> BotSession:
        s = self.settings
        transport = AvatarLiveKitTransport(
            s.livekit_url, bot_token(s, room), room,
            # LiveKit's own sender thread plays out up to a second queued here, so a busy event
            # loop (a CPU shared with the models) does not leave holes in the bot's voice; an
            # interruption clears the queue, so barge-in does not wait for it.
            params=LiveKitParams(audio_in_enabled=True, audio_out_enabled=True,
                                 audio_out_queue_size_ms=1000))
        conversation = self.builder(transport_input=transport.input(),
                                    transport_output=transport.output())
        worker = PipelineWorker(
            conversation.pipeline,
            params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=24000,
                                  enable_metrics=True, enable_usage_metrics=True),
            enable_rtvi=True,
            idle_timeout_secs=s.session_idle_seconds,
            cancel_on_idle_timeout=True,
        )
        observe(worker)
        runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        session = BotSession(room, conversation, worker, runner, transport)
        metrics.CONVERSATIONS_STARTED.inc()

        @transport.event_handler("on_connected")
        async def _connected(_transport):
            session.joined.set()

        @transport.event_handler("on_participant_left")
        async def _left(_transport, participant, reason):
            # One person per conversation: when they leave, the session ends and frees its parts.
            if not [p for p in transport.get_participants() if p != BOT_IDENTITY]:
                log.info("the user left room %s: ending its session", room)
                await worker.cancel(reason="user left")

        async def end_when_empty():
            """Also catches a user who left before the bot saw them join (no event then)."""
            loop = asyncio.get_running_loop()
            empty_since = None
            while True:
                await asyncio.sleep(0.5)
                if not session.joined.is_set():
                    continue
                try:
                    others = [p for p in transport.get_participants() if p != BOT_IDENTITY]
                except AttributeError:  # not connected (yet, or any more)
                    others = []
                if others:
                    empty_since = None
                elif empty_since is None:
                    empty_since = loop.time()
                elif loop.time() - empty_since > s.session_empty_seconds:
                    log.info("room %s has been empty for %.0f s: ending its session", room,
                             s.session_empty_seconds)
                    await worker.cancel(reason="nobody in the room")
                    return

        async def run():
            watchdog = asyncio.create_task(end_when_empty())
            try:
                await runner.add_workers(worker)
                await runner.run()
            except Exception:  # a broken session must not take the server down
                log.exception("bot session for room %s failed", room)
            finally:
                watchdog.cancel()
                session.joined.set()
                if self.sessions.get(room) is session:  # forget it: its pipeline can be freed
                    del self.sessions[room]
                log.info("bot session for room %s ended", room)

        session.task = asyncio.create_task(run(), name=f"bot:{room}")
        # Once the task is done its frame, and with it the pipeline, is gone: trim then.
        session.task.add_done_callback(lambda _task: asyncio.get_running_loop().run_in_executor(
            None, return_freed_memory))
        return session

    def in_room(self, room: str, identity: str) -> bool:
        """Whether ``identity`` is connected to ``room`` now, as the room's bot sees it."""
        session = self.sessions.get(room)
        if session is None or session.transport is None or session.task is None \
                or session.task.done():
            return False
        try:
            return identity in session.transport.get_participants()
        except AttributeError:  # not connected
            return False

    def active_rooms(self) -> list[str]:
        return [r for r, s in self.sessions.items() if s.task is not None and not s.task.done()]

    async def stop(self, room: str) -> None:
        session = self.sessions.get(room)
        if session is None or session.task is None or session.task.done():
            return
        await session.worker.cancel(reason="stopped")
        try:
            await asyncio.wait_for(session.task, timeout=10)
        except asyncio.TimeoutError:
            session.task.cancel()

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(r) for r in list(self.sessions)))
