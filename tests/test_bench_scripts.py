"""The benchmark scripts start: each module imports, and bench.py parses its options. (A
refactor of bench_livekit.py once left `bench.py --concurrent` failing at its first line.)"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


@pytest.mark.parametrize("name", sorted(p.stem for p in SCRIPTS.glob("bench*.py")))
def test_each_benchmark_module_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    module = importlib.import_module(name)
    runners = [n for n in dir(module) if n.startswith("run_") and n.endswith("_bench")]
    # each part of bench.py has its runner (bench.py itself and the shared helpers have none)
    assert runners or name in {"bench", "bench_common", "bench_stock_app"}, name


def test_bench_lists_its_options():
    r = subprocess.run([sys.executable, "scripts/bench.py", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for option in ("--concurrent", "--livekit", "--web", "--transport", "--soak"):
        assert option in r.stdout, option
