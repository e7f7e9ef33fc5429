"""What every benchmark writes with its figures: the machine, the commit, and its section of
docs/benchmarks.md. Standard library only, so a benchmark can run where the product's
dependencies are not installed (the GPU machine, for the engine benchmarks)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{cpu}, {os.cpu_count()} cores" + (f", {gpu}" if gpu else ", no GPU")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_section(path: Path, key: str, title: str, header: str, table: str) -> str:
    begin, end = f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"
    section = f"{begin}\n### {title}\n\n{header}\n\n{table}\n{end}"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nWritten by `scripts/bench.py`; do not edit the tables by hand.\n")
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    return section


def event_loop_lag(base_url: str) -> str:
    """A sentence on the bot's event-loop lag so far, from its GET /metrics (dev mode: open)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    family = next((f for f in text_string_to_metric_families(text)
                   if f.name == "avatar_event_loop_lag_seconds"), None)
    if family is None:
        return "The bot's event-loop lag: not reported."
    upto = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    n = upto["+Inf"]
    late = ", ".join(f"{(n - upto[le]) / n:.1%} more than {float(le) * 1000:.0f} ms late"
                     for le in ("0.01", "0.05", "0.2")) if n else "none"
    return (f"The bot's event loop (avatar_event_loop_lag_seconds, a 20 ms timer, {n:.0f} times "
            f"over the session): {late}.")
