"""Closed-loop maximum throughput with ``wrk``: Lua body script, run, and output parser.

wrk (Debian's package) keeps N connections busy, each sending its next request as soon as the
previous answer arrives, so its ``Requests/sec`` is the target's saturation throughput. Its
latencies suffer from coordinated omission and are reported for reference only; the open-loop
generator in ``bench.loadgen`` measures latency properly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LAT_PCT = re.compile(r"^\s*(50|75|90|99(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass
class WrkResult:
    """What one wrk run reports. Latencies in milliseconds (closed loop: reference only)."""

    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors of every kind."""
        return self.non_2xx + sum(self.socket_errors.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the error total spelled out."""
        return {**asdict(self), "errors": self.errors}


def parse_wrk_output(text: str) -> WrkResult:
    """Parse wrk's text report (run with ``--latency``).

    Raises:
        ValueError: when the text has no ``Requests/sec`` line (wrk failed or was killed).
    """
    rps = _RPS.search(text)
    if rps is None:
        raise ValueError("wrk output has no Requests/sec line:\n" + text[-2000:])
    result = WrkResult(rps=float(rps.group(1)))
    if total := _TOTAL.search(text):
        result.requests = int(total.group(1))
        result.duration_s = float(total.group(2)) * _UNITS_S[total.group(3)]
    for pct, value, unit in _LAT_PCT.findall(text):
        result.latency_ms[f"p{pct}"] = round(float(value) * _UNITS_S[unit] * 1000, 3)
    if sock := _SOCKET.search(text):
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True)
        )
    if non := _NON2XX.search(text):
        result.non_2xx = int(non.group(1))
    return result


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    """A wrk Lua script that POSTs ``body`` with ``headers``.

    A long bracket string keeps JSON quotes intact; its level is chosen so the body cannot close it.
    """
    text = body.decode()
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    lines = ['wrk.method = "POST"', f"wrk.body = [{eq}[{text}]{eq}]"]
    for key, value in headers.items():
        lines.append(f'wrk.headers["{key}"] = "{value}"')
    return "\n".join(lines) + "\n"


def wrk_available() -> bool:
    """Whether the ``wrk`` binary is on PATH."""
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 5.0,
    prefix: list[str] | None = None,
) -> WrkResult:
    """Run wrk once against ``url`` and parse its report.

    Args:
        prefix: command prefix such as ``["taskset", "-c", "1"]`` to pin the load generator.

    Raises:
        ValueError: wrk printed no report; subprocess.TimeoutExpired: wrk overran its duration.
    """
    # wrk's -d takes whole seconds at least 1; bounded by a hard subprocess timeout as well.
    secs = max(1, round(duration_s))
    cmd = [
        *(prefix or []),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{secs}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + timeout_s + 15, check=False)
    return parse_wrk_output(proc.stdout + proc.stderr)
