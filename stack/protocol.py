"""The bot -> browser lip-sync protocol, version 1: defined here once.

`docs/protocol.md` documents it and `docs/protocol.schema.json` is generated from these models
(``python -m stack.protocol > docs/protocol.schema.json``; a test fails when they drift). The web
client's TypeScript types are generated from that schema.

Messages travel as JSON over the LiveKit data channel (reliable; RTVI messages share the channel
and carry ``label: "rtvi-ai"``, ours carry ``v`` and a ``speech.*`` type). Times are
milliseconds. Word and viseme arrays are parallel arrays, the shape TalkingHead's ``speakAudio``
takes, which also keeps a long chunk well inside one data packet.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .lipsync import (
    OCULUS_VISEMES,
    ONSET_LEVEL,
    ONSET_SAMPLE_LEVEL,
    ONSET_WINDOW_MS,
    PAUSE_MIN_MS,
    SAMPLE_RATE,
    SpeechTiming,
    voice_onset_ms,
    voice_pauses_ms,
)

PROTOCOL_VERSION = 1
# What the page sends on the data channel, as Pipecat's RTVI messages. Typed chat: ``send-text``;
# longer messages are refused with a reason (the page before sending, the bot again:
# stack/chat.py). A voice: the client message ``set-voice`` with ``{"voice": name}``.
CHAT_MAX_CHARS = 1000
SET_VOICE = "set-voice"

Viseme = Literal["sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O",
                 "U"]
assert set(Viseme.__args__) == set(OCULUS_VISEMES)  # type: ignore[attr-defined]

Ms = Annotated[float, Field(ge=0)]


class _Message(BaseModel):
    # Every field is always sent, so the schema (serialization mode) lists them all as required.
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)
    v: Literal[1] = PROTOCOL_VERSION


class SpeechChunkMessage(_Message):
    """Sent before the audio it describes: the timings of one chunk of bot speech."""

    type: Literal["speech.chunk"] = "speech.chunk"
    turn_id: str = Field(description="One bot reply; all its chunks share it.")
    seq: int = Field(ge=0, description="Chunk index within the turn, from 0.")
    text: str = Field(description="The text this chunk speaks.")
    offset_ms: Ms = Field(description="Where this chunk's first sample falls in the turn's audio.")
    duration_ms: Ms = Field(description="Length of this chunk's audio.")
    samples: int = Field(ge=0, description="Length of this chunk's audio in samples.")
    sample_rate: int = Field(SAMPLE_RATE, description="Sample rate the durations were made at.")
    words: list[str]
    wtimes: list[Ms] = Field(description="Start of each word, from the chunk's first sample.")
    wdurations: list[Ms]
    visemes: list[Viseme] = Field(description="Oculus visemes, as TalkingHead names them.")
    vtimes: list[Ms] = Field(description="Start of each viseme, from the chunk's first sample.")
    vdurations: list[Ms]
    source: Literal["model", "estimate"] = Field(
        "model", description="model: from the TTS model's own durations; estimate: a fallback.")
    lead_ms: Ms = Field(0.0, description="When sent, the bot's outgoing audio queue held this "
                        "much earlier audio: the chunk's first sample leaves that much later.")
    onset_ms: Ms | None = Field(None, description="Where the chunk's voice first becomes audible "
                                "(stack.lipsync.voice_onset_ms), for clients that align on the "
                                "onset they hear; None: the chunk is silent.")
    ptimes: list[Ms] = Field(default_factory=list, description="Start of each quiet stretch of "
                             "150 ms or more that ends in voice (stack.lipsync.voice_pauses_ms); "
                             "the chunk's start counts as quiet.")
    pdurations: list[Ms] = Field(default_factory=list, description="Length of each quiet "
                                 "stretch: the voice's onset is ptimes + pdurations.")
    voice: str | None = Field(None, description="The voice that speaks it (GET /voices); the "
                              "same for every chunk of a turn.")


class SpeechStopMessage(_Message):
    """The bot stopped talking before the end of what it announced (barge-in): close the mouth."""

    type: Literal["speech.stop"] = "speech.stop"
    turn_id: str
    reason: Literal["interrupted", "ended"] = "interrupted"
    sent_ms: Ms | None = Field(None, description="How far the turn's audio had left the bot when "
                               "it stopped (a place in the turn's audio, like offset_ms): the "
                               "person still hears its voice up to there, so the mouth goes on "
                               "until then. None: unknown (close the mouth at once).")


Message = Annotated[SpeechChunkMessage | SpeechStopMessage, Field(discriminator="type")]
MESSAGE_ADAPTER: TypeAdapter = TypeAdapter(Message)


def _r(x: float) -> float:
    return round(x, 1)


def chunk_message(timing: SpeechTiming, audio: np.ndarray, *, turn_id: str, seq: int, text: str,
                  offset_ms: float, voice: str | None = None) -> SpeechChunkMessage:
    """The message for one chunk of Kokoro's speech: its timings, and from its audio (24 kHz) its
    length, where its voice becomes audible and its pauses."""
    onset_ms = voice_onset_ms(audio, SAMPLE_RATE)
    pauses = voice_pauses_ms(audio, SAMPLE_RATE)
    return SpeechChunkMessage(
        turn_id=turn_id, seq=seq, text=text, offset_ms=_r(offset_ms),
        onset_ms=None if onset_ms is None else _r(onset_ms),
        ptimes=[_r(a) for a, _ in pauses], pdurations=[_r(b - a) for a, b in pauses],
        duration_ms=_r(len(audio) * 1000 / SAMPLE_RATE), samples=len(audio),
        words=[w.word for w in timing.words],
        wtimes=[_r(w.start_ms) for w in timing.words],
        wdurations=[_r(w.duration_ms) for w in timing.words],
        visemes=[v.viseme for v in timing.visemes],
        vtimes=[_r(v.start_ms) for v in timing.visemes],
        vdurations=[_r(v.duration_ms) for v in timing.visemes], voice=voice,
    )


def json_schema() -> dict:
    schema = MESSAGE_ADAPTER.json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"Avatar lip-sync protocol v{PROTOCOL_VERSION}"
    # Not a message: the numbers both sides must agree on to find the same voice onsets
    # (``onset_ms``, ``pauses``); the web client's copy is generated from here.
    schema["x-onset-rule"] = {
        "description": "A window of windowMs whose RMS reaches level is voice; voice after at "
        "least pauseMinMs of quiet windows is an onset, at its window's first sample whose "
        "magnitude reaches sampleLevel.",
        "windowMs": ONSET_WINDOW_MS, "level": ONSET_LEVEL, "sampleLevel": ONSET_SAMPLE_LEVEL,
        "pauseMinMs": PAUSE_MIN_MS,
    }
    schema["x-client"] = {
        "description": "What the page sends, as RTVI messages: typed chat as send-text, at most "
        "chatMaxChars characters after trimming (a longer one is refused with a reason, by the "
        "page and the bot); a voice of GET /voices as the client-message setVoice, {voice}.",
        "chatMaxChars": CHAT_MAX_CHARS, "setVoice": SET_VOICE,
    }
    return schema


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
