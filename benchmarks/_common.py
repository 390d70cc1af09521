"""Shared by the benchmarks: side-by-side timing, child-process peak RSS, the closing JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable


def best_of(runs: int, **variants: Callable[[], object]) -> dict[str, float]:
    """Run the variants interleaved ``runs`` times and keep each one's fastest time, so that noise on a
    shared machine hits them alike."""
    best = {name: float("inf") for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def child_peak_rss_mb(code: str, *args: str) -> float:
    """Peak resident memory of a fresh Python process running ``code`` (its own, not this process's)."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip().splitlines()[-1])


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child started by a big parent
# would report the parent's size.
PEAK_RSS_SNIPPET = (
    "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)"
)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "-" * len(line), *body])


def finish(figures: dict[str, object]) -> None:
    """The very last line of every benchmark: one JSON object, comparable across runs."""
    print(json.dumps(figures))
