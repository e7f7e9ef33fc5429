"""All configuration in one place. Every field can be set from the environment or `.env`
(upper-case name, e.g. ``MODEL_PROFILE=cpu``); `.env.example` lists them all."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .manifest import Profile, get_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
# LiveKit's public development keys (livekit-server --dev): fine on one machine, refused
# elsewhere (check_config). The defaults below, and what scripts/dev.py runs LiveKit with.
DEV_KEY, DEV_SECRET = "devkey", "secret"


class ConfigError(RuntimeError):
    """The service refuses to start with this configuration; the message says what to change."""


class Settings(BaseSettings):
    # An empty value (LLM_TEMPERATURE=) means "not set": the default applies.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_parse_none_str="")

    # Models
    models_dir: Path = Field(REPO_ROOT / "models", description="Where downloaded models live.")
    model_profile: str = Field("gpu", description="Model set: gpu, cpu or test.")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Where the models run.")
    stt_device: Literal["auto", "cuda", "cpu"] | None = Field(
        None, description="Where Whisper runs; None = DEVICE. cpu keeps it off the GPU, e.g. "
        "where CTranslate2's CUDA 12 libraries (cuBLAS 12) are missing but the LLM's are there.")
    llm_device: Literal["auto", "cuda", "cpu"] | None = Field(
        None, description="Where the LLM runs; None = DEVICE.")
    tts_device: Literal["auto", "cuda", "cpu"] | None = Field(
        None, description="Where Kokoro runs; None = DEVICE.")

    # Speech-to-text
    stt_language: str = "en"
    stt_beam_size: int = Field(1, description="1 = greedy: lowest latency.")
    stt_workers: int | None = Field(
        None, ge=1, description="Transcriptions Whisper runs at the same time, one model replica "
        "each; None = the profile's (gpu 4, cpu 2, test 2).")
    stt_threads: int | None = Field(
        None, ge=1, description="CPU threads for Whisper; None = a quarter of the cores. The "
        "three engines' defaults add up to the cores instead of each taking all of them.")
    stt_short_window: bool = Field(
        True, description="Encode each utterance with 3 s of Whisper's window after it instead "
        "of all 30 s: the same words, a fraction of the time (docs/benchmarks.md); false = the "
        "whole window, as Whisper was trained.")

    # LLM
    llm_context_tokens: int = 4096
    llm_max_tokens: int = 256
    llm_temperature: float | None = Field(
        None, description="Sampling temperature; None = the profile's (0 for the tiny test model).")
    llm_repeat_penalty: float = Field(1.0, description="1.0 = off; chat-tuned models need none.")
    llm_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; None = "
                                    "half the cores (the thread budget, see stt_threads).")
    llm_parallel: int | None = Field(
        None, ge=1, description="Conversations the LLM decodes together, each with its own "
        "cache; None = the profile's (gpu 16, cpu 2, test 4); 1 = one reply at a time.")
    system_prompt: str = Field(
        "You are a friendly assistant speaking out loud through a 3D avatar. Answer in one to "
        "three short sentences of plain spoken English: no lists, no markdown, no emoji.",
    )

    # Text-to-speech
    tts_backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="auto: torch on a GPU, onnx on a CPU (as the profile provides).")
    tts_voice: str | None = Field(None, description="Kokoro voice; None = the profile's default.")
    tts_speed: float = 1.0
    tts_threads: int | None = Field(None, ge=1, description="CPU threads for Kokoro; None = a "
                                    "quarter of the cores.")
    tts_workers: int | None = Field(
        None, ge=1, description="Syntheses Kokoro runs at the same time on its one model, each "
        "on TTS_THREADS threads; None = the profile's (1 in every profile).")
    tts_vnni_matmul: bool = Field(
        True, description="On a CPU with VNNI, Kokoro's int8 convolutions run as int8 matrix "
        "products onnxruntime has a fast kernel for: the same audio bit for bit, ~1.4x sooner on "
        "one thread (docs/benchmarks.md); false = the downloaded graph as it is.")

    # Web client and avatars
    web_dir: Path | None = Field(None, description="The built web client (npm --prefix web "
                                 "run build), served at /; None = web/out of this checkout.")
    avatars_dir: Path | None = Field(None, description="Folder of the avatars (*.glb) people can "
                                     "choose; None = MODELS_DIR/avatars.")
    default_avatar: str = Field("mpfb", description="Avatar shown first (file name without .glb).")

    # Service: HTTP API and LiveKit
    transport: Literal["livekit", "smallwebrtc"] = Field(
        "livekit", description="How browsers reach the bot: livekit (a LiveKit server; the "
        "Compose stack) or smallwebrtc (peer to peer with the bot itself, no media server: one "
        "machine or a LAN).")
    dev_mode: bool = Field(False, description="Allows LiveKit's dev keys and no ACCESS_KEY.")
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    access_key: str | None = Field(
        None, description="Passphrase a browser must send (Authorization: Bearer ...). Required "
        "unless DEV_MODE.")
    cors_origins: list[str] = Field(default_factory=list,
                                    description="Other origins allowed to call the API.")
    rate_limit_per_minute: int = Field(30, description="Token requests per client per minute.")
    token_ttl_seconds: int = Field(600, description="Lifetime of a browser's LiveKit token.")
    livekit_url: str = Field("ws://127.0.0.1:7880", description="LiveKit as the bot reaches it.")
    livekit_public_url: str | None = Field(
        None, description="LiveKit as browsers reach it; None = LIVEKIT_URL.")
    max_conversations: int | None = Field(
        None, ge=1, description="Conversations this process holds at once; beyond it POST "
        "/token answers 503 (busy) with Retry-After. None = the profile's (gpu 16, cpu 3, test 8).")
    session_idle_seconds: float = Field(300, description="End a conversation after this long "
                                        "with nobody speaking.")
    session_empty_seconds: float = Field(20, description="End a conversation when its room "
                                         "has had nobody but the bot for this long.")
    turn_host: str | None = Field(None, description="Public name of the coturn server; None = "
                                  "no TURN (browsers must reach LiveKit directly).")
    turn_secret: str | None = Field(None, description="Shared secret of coturn and LiveKit.")
    turn_ttl_seconds: int = Field(14400, description="Lifetime of a browser's TURN credentials.")
    turn_tls_cert: Path | None = Field(
        None, description="Certificate (PEM, full chain) naming TURN_HOST, for TURN over TLS on "
        "TURN_TLS_PORT: browsers behind firewalls that pass only TLS; None = no TURN over TLS.")
    turn_tls_key: Path | None = Field(None, description="TURN_TLS_CERT's private key (PEM).")
    turn_tls_port: int = Field(
        5349, ge=1, le=65535, description="coturn's TCP port for TURN over TLS. 443 also passes "
        "firewalls that let only HTTPS out, where nothing else on this host listens on 443.")
    livekit_api_key: str = DEV_KEY
    livekit_api_secret: str = DEV_SECRET

    @property
    def temperature(self) -> float:
        """LLM_TEMPERATURE, or the profile's when unset."""
        if self.llm_temperature is None:
            return self.profile.llm_temperature
        return self.llm_temperature

    @property
    def llm_sequences(self) -> int:
        """LLM_PARALLEL, or the profile's when unset."""
        return self.profile.llm_parallel if self.llm_parallel is None else self.llm_parallel

    @property
    def conversation_limit(self) -> int:
        """MAX_CONVERSATIONS, or the profile's when unset."""
        return (self.profile.max_conversations if self.max_conversations is None
                else self.max_conversations)

    @property
    def whisper_workers(self) -> int:
        """STT_WORKERS, or the profile's when unset."""
        return self.profile.stt_workers if self.stt_workers is None else self.stt_workers

    @property
    def kokoro_workers(self) -> int:
        """TTS_WORKERS, or the profile's when unset."""
        return self.profile.tts_workers if self.tts_workers is None else self.tts_workers

    def engine_device(self, engine: Literal["stt", "llm", "tts"]) -> tuple[str, str]:
        """The device asked for one engine and the setting that asked: its own, else DEVICE."""
        own = getattr(self, f"{engine}_device")
        return (own, f"{engine.upper()}_DEVICE") if own else (self.device, "DEVICE")

    @property
    def thread_budget(self) -> dict[str, int]:
        """CPU threads per engine: the settings, else a quarter of the cores for Whisper and for
        Kokoro and half for the LLM. Each engine's own default takes all the cores, and three
        engines at once then run slower than with their shares (docs/benchmarks.md)."""
        cores = os.cpu_count() or 1
        return {"stt": self.stt_threads or max(1, cores // 4),
                "llm": self.llm_threads or max(1, cores // 2),
                "tts": self.tts_threads or max(1, cores // 4)}

    @property
    def web_path(self) -> Path:
        return self.web_dir or REPO_ROOT / "web" / "out"

    @property
    def avatars_path(self) -> Path:
        return self.avatars_dir or self.models_dir / "avatars"

    @property
    def profile(self) -> Profile:
        return get_profile(self.model_profile)


TURN_SECRET_SHORT = "TURN_SECRET must be at least 32 characters (openssl rand -base64 32)"


def check_config(settings: Settings) -> None:
    """Refuse a configuration that would be unsafe on a network (unless DEV_MODE), or a TURN
    relay whose credentials could not work."""
    if settings.turn_host and len(settings.turn_secret or "") < 32:
        raise ConfigError(f"TURN_HOST is set: {TURN_SECRET_SHORT}")
    if bool(settings.turn_tls_cert) != bool(settings.turn_tls_key):
        raise ConfigError("TURN over TLS needs both TURN_TLS_CERT and TURN_TLS_KEY (or neither)")
    if settings.turn_tls_cert and not settings.turn_host:
        raise ConfigError("TURN_TLS_CERT is set but TURN_HOST is not: TURN over TLS is offered "
                          "as TURN_HOST, the name the certificate must carry")
    if settings.dev_mode:
        return
    if settings.transport == "livekit":
        check_livekit_keys(settings)
    if not settings.access_key:
        raise ConfigError("ACCESS_KEY is not set: anyone on the network could start "
                          "conversations; set one, or DEV_MODE=true on a development machine")


def check_livekit_keys(settings: Settings) -> None:
    if (settings.livekit_api_key, settings.livekit_api_secret) == (DEV_KEY, DEV_SECRET):
        raise ConfigError("LIVEKIT_API_KEY/LIVEKIT_API_SECRET are LiveKit's public dev keys; set "
                          "your own (the same as in livekit.yaml) or DEV_MODE=true")
    if len(settings.livekit_api_secret) < 32:
        raise ConfigError("LIVEKIT_API_SECRET must be at least 32 characters "
                          "(openssl rand -base64 32)")


@lru_cache
def get_settings() -> Settings:
    return Settings()
