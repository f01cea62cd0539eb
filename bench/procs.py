"""Subprocesses for the benchmark: free ports, CPU pinning, readiness, and /proc accounting.

Every process the harness starts gets its own session (process group) so that stopping it also
stops the worker processes granian spawns, and nothing else. CPU time and RSS come from
``/proc/<pid>/stat`` and ``/proc/<pid>/status`` of the whole process tree, because granian serves
from a child worker while the parent only supervises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Pinning:
    """Which CPU serves the target and which serves the mock and the load generator."""

    enabled: bool
    target_cpu: int | None
    load_cpu: int | None
    note: str

    def prefix(self, role: str) -> list[str]:
        """Command prefix for ``role``: "target" or "load" (``taskset``; empty when not pinning), or
        "background": on the load CPU at the lowest priority (``nice -n 19``).

        Background is for consumers that production runs on their own CPUs (the exporter, the
        OTLP sink): here they share the load CPU, and at normal priority their bursts of work
        would delay the mock and the load generators, which shows up as latency added by the
        target that the target did not add."""
        if role == "background":
            return ["nice", "-n", "19", *self.prefix("load")]
        if not self.enabled:
            return []
        cpu = self.target_cpu if role == "target" else self.load_cpu
        return ["taskset", "-c", str(cpu)]


def decide_pinning(disable: bool = False) -> Pinning:
    """Pin the target to the first allowed CPU and the rest to the second, when two exist."""
    cpus = sorted(os.sched_getaffinity(0))
    if disable:
        return Pinning(False, None, None, "pinning disabled by --no-pin")
    if len(cpus) < 2:
        return Pinning(False, None, None, f"pinning impossible: only {len(cpus)} CPU available; all share it")
    if subprocess.run(["which", "taskset"], capture_output=True, check=False).returncode != 0:
        return Pinning(False, None, None, "pinning impossible: taskset not found")
    return Pinning(
        True,
        cpus[0],
        cpus[1],
        f"target on CPU {cpus[0]}; mock, helpers and load generators on CPU {cpus[1]} (exporter and OTLP sink at nice 19)",
    )


@dataclass
class Proc:
    """A started subprocess with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """PID of the process we started (the tree's root)."""
        return self.popen.pid

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the process's combined stdout/stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start(
    name: str, cmd: list[str], log_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> Proc:
    """Start ``cmd`` in its own session with output to ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    log.close()  # the child holds its own descriptor
    return Proc(name, popen, log_path, port)


def wait_http(proc: Proc, url: str, timeout_s: float = 30.0, *, require_ok: bool = False) -> None:
    """Wait until ``url`` answers any HTTP status (or a 2xx with ``require_ok``, e.g. ``/readyz``).

    Raises:
        RuntimeError: the process exited, or ``timeout_s`` passed without an answer.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - 127.0.0.1 only
                return
        except urllib.error.HTTPError as exc:
            exc.close()
            if not require_ok:
                return  # an error status still proves the server is up
            time.sleep(0.1)
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout_s:.0f}s:\n{proc.log_tail()}")


def wait_port(proc: Proc, port: int, timeout_s: float = 15.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not listening on {port} after {timeout_s:.0f}s:\n{proc.log_tail()}")


def stop(proc: Proc, grace_s: float = 5.0) -> None:
    """SIGTERM the process group we created for ``proc``, SIGKILL it after ``grace_s``."""
    if proc.popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=5)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants (from the ppid field of /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (all their threads)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size of one process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss(root: int) -> dict[str, float]:
    """RSS of a process tree: ``total_mb`` and ``worker_mb`` (largest single process)."""
    sizes = [rss_mb(pid) for pid in tree_pids(root)]
    return {
        "total_mb": round(sum(sizes), 1),
        "worker_mb": round(max(sizes, default=0.0), 1),
        "processes": len(sizes),
    }
