#!/usr/bin/env python3
"""Run the whole product on one machine without Docker: a LiveKit server and the bot.

    python scripts/dev.py                    # cpu profile, http://localhost:8080
    python scripts/dev.py --profile test     # the tiny test models
    TRANSPORT=smallwebrtc python scripts/dev.py   # the bot alone: browsers connect to it directly

LiveKit runs with its development keys and DEV_MODE=true: for a development machine, not for a
team (use docker-compose.gpu.yml there). Models missing from MODELS_DIR are fetched first.
Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from stack.config import DEV_KEY, DEV_SECRET, Settings  # noqa: E402
from stack.livekit_config import livekit_config  # noqa: E402
from stack.livekit_server import (  # noqa: E402
    LIVEKIT_VERSION,
    LiveKitServer,
    PortInUse,
    check_port_free,
    find_binary,
)

STOP_GRACE_S = 3  # Ctrl-C: each process gets this long to finish, then it is killed



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", default=os.environ.get("MODEL_PROFILE", "cpu"))
    ap.add_argument("--models-dir", default=os.environ.get("MODELS_DIR", str(ROOT / "models")))
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--livekit-port", type=int, default=7880)
    ap.add_argument("--loopback", action="store_true", help="listen on 127.0.0.1 only")
    args = ap.parse_args()

    host = "127.0.0.1" if args.loopback else "0.0.0.0"
    try:  # before anything slow: a taken port is the commonest reason this fails
        check_port_free(args.http_port, host, what="the page and API", option="--http-port")
    except PortInUse as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    fetch = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_models.py"),
                            "--profile", args.profile, "--models-dir", args.models_dir])
    if fetch.returncode:
        return fetch.returncode

    settings = Settings()
    env = {**os.environ, "DEV_MODE": "true", "MODEL_PROFILE": args.profile,
           "MODELS_DIR": args.models_dir, "HTTP_PORT": str(args.http_port),
           "HTTP_HOST": "127.0.0.1" if args.loopback else "0.0.0.0"}
    if settings.transport != "livekit":  # SmallWebRTC: no media server
        return run_bot(env, args.http_port, livekit=None)

    binary = find_binary()
    if binary is None:
        print(f"error: livekit-server not found. Build it once with Go:\n  "
              f"GOBIN=~/.cache/avatar-stack/bin/livekit-{LIVEKIT_VERSION} "
              f"go install github.com/livekit/livekit-server/cmd/"
              f"server@{LIVEKIT_VERSION}\nor set LIVEKIT_SERVER_BIN.", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="avatar-dev-"))
    config = livekit_config(settings)  # TURN_HOST set: your own coturn (coturn/turnserver.conf)
    try:
        livekit = LiveKitServer(binary, tmp, DEV_KEY, DEV_SECRET, port=args.livekit_port,
                                loopback_only=args.loopback, config=config)
    except (PortInUse, RuntimeError) as e:
        if isinstance(e, PortInUse):  # nothing written yet (a failed start keeps its log)
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"LiveKit on ws://localhost:{livekit.port} (log: {tmp / 'livekit.log'})")
    env.update({"LIVEKIT_URL": f"ws://127.0.0.1:{livekit.port}",
                "LIVEKIT_API_KEY": DEV_KEY, "LIVEKIT_API_SECRET": DEV_SECRET})
    return run_bot(env, args.http_port, livekit)


def run_bot(env: dict[str, str], http_port: int, livekit: LiveKitServer | None) -> int:
    # The very command the container runs.
    bot = subprocess.Popen([sys.executable, "-m", "stack.app"], cwd=ROOT, env=env)

    def stop(*_):
        # Both at once (a terminal's Ctrl-C has already reached them too), each killed if it
        # is not done within STOP_GRACE_S: the bot ends its sessions, LiveKit drains its rooms.
        bot.terminate()
        if livekit is not None:
            livekit.proc.terminate()
        try:
            bot.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            bot.kill()
        if livekit is not None:
            livekit.stop(timeout=STOP_GRACE_S)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = f"http://127.0.0.1:{http_port}"
    while bot.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/ready", timeout=2)
            print(f"ready: {url}")
            break
        except OSError:
            time.sleep(0.5)
    code = bot.wait()
    if livekit is not None:
        livekit.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
