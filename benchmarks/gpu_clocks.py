"""GPU clocks, power and temperature read through `nvidia-smi` before, during and after a benchmark run.

A slow run on a throttled or shared GPU looks like a slow variant unless the clocks are on record: every benchmark
result carries a reading before and after, and a summary of the samples taken while its timed steps ran. Where
`nvidia-smi` is missing (CPU machines) everything here returns None and nothing fails.
"""

from __future__ import annotations

import functools
import shutil
import statistics
import subprocess
import threading
import time

FIELDS = (
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "utilization.gpu",
    "clocks_event_reasons.active",
)
NAMES = ("sm_mhz", "mem_mhz", "max_sm_mhz", "power_w", "power_limit_w", "temp_c", "util_pct", "event_reasons")


def _parse(line: str) -> dict:
    values = {}
    for name, raw in zip(NAMES, (x.strip() for x in line.split(",")), strict=False):
        if name == "event_reasons":
            values[name] = raw if raw.startswith("0x") else None
            continue
        try:
            values[name] = float(raw)
        except ValueError:  # "[N/A]", "[Not Supported]"
            values[name] = None
    return values


def _command(fields=FIELDS, interval_ms: int | None = None) -> list[str]:
    cmd = ["nvidia-smi", "-i", "0", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
    return cmd + ([f"-lms={interval_ms}"] if interval_ms else [])


@functools.lru_cache(maxsize=1)
def _fields() -> tuple:
    # Older drivers call the last field clocks_throttle_reasons; without either, the rest still reads.
    for last in ("clocks_event_reasons.active", "clocks_throttle_reasons.active", None):
        fields = FIELDS[:-1] + ((last,) if last else ())
        try:
            subprocess.run(_command(fields), check=True, capture_output=True, timeout=20)
            return fields
        except (subprocess.SubprocessError, OSError):
            continue
    return FIELDS[:-1]


def query(fields=None) -> dict | None:
    """One reading of GPU 0, or None where there is no nvidia-smi or it fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(_command(fields or _fields()), check=True, capture_output=True, text=True, timeout=20)
    except (subprocess.SubprocessError, OSError):
        return None
    return {"unix": time.time(), **_parse(out.stdout.strip().splitlines()[0])}


def summarize(samples: list[dict], window: tuple[float, float] | None = None) -> dict | None:
    """Median/min/max SM clock, mean/max power, max temperature over the samples inside `window` (unix seconds)."""
    if window:
        samples = [s for s in samples if window[0] <= s["unix"] <= window[1]]
    if not samples:
        return None

    def column(key):
        return [s[key] for s in samples if s.get(key) is not None]

    sm, power, temp, util = column("sm_mhz"), column("power_w"), column("temp_c"), column("util_pct")
    reasons = sorted({s["event_reasons"] for s in samples if s.get("event_reasons")})
    return {
        "samples": len(samples),
        "sm_mhz_median": statistics.median(sm) if sm else None,
        "sm_mhz_min": min(sm) if sm else None,
        "sm_mhz_max": max(sm) if sm else None,
        "mem_mhz_median": statistics.median(column("mem_mhz")) if column("mem_mhz") else None,
        "power_w_mean": statistics.fmean(power) if power else None,
        "power_w_max": max(power) if power else None,
        "temp_c_max": max(temp) if temp else None,
        "util_pct_median": statistics.median(util) if util else None,
        "event_reasons": reasons,
    }


class Sampler:
    """`nvidia-smi -lms` in the background for the duration of a `with` block; readings stamped on arrival."""

    def __init__(self, interval_ms: int = 500):
        self.interval_ms = interval_ms
        self.samples: list[dict] = []
        self.before = self.after = None
        self._proc = self._thread = None

    def __enter__(self):
        self.before = query()
        if self.before is not None:
            self._proc = subprocess.Popen(
                _command(_fields(), self.interval_ms), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            if line.strip():
                self.samples.append({"unix": time.time(), **_parse(line)})

    def __exit__(self, *exc):
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._thread.join(timeout=10)
        self.after = query()
        return False

    def record(self, window: tuple[float, float] | None = None) -> dict | None:
        """What a result file keeps: before, after, and summaries over the timed window and the whole block."""
        if self.before is None:
            return None
        return {
            "interval_ms": self.interval_ms,
            "before": self.before,
            "after": self.after,
            "timed_steps": summarize(self.samples, window),
            "whole_run": summarize(self.samples),
        }
