"""Where a target's CPU goes under load: py-spy samples the pinned process tree during a wrk run.

Used by ``python -m bench.overhead --profile gateway,gateway-full`` after the measured phases (a
separate load phase, so sampling never perturbs the reported figures). Needs ``py-spy`` (a PyPI
wheel with its binary: ``.venv/bin/pip install py-spy``); without it the profile is skipped with a
message. Writes py-spy's collapsed stacks and prints the hottest functions, self and inclusive.

    python -m bench.profile bench/results/<run>-gateway.collapsed      # re-print a summary
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path


def py_spy() -> str | None:
    """Path of the py-spy binary (venv first), or None."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, out: Path, duration_s: float, load: Callable[[], object], prefix: list[str]) -> str:
    """Sample ``pid`` and its children while ``load()`` runs; returns a summary or why not.

    Args:
        prefix: taskset prefix for py-spy itself (the load CPU), so it does not steal the target's core.
    """
    binary = py_spy()
    if binary is None:
        return "py-spy not installed (.venv/bin/pip install py-spy): no profile"
    cmd = [
        *prefix,
        binary,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--nonblocking",
        "--rate",
        "250",
        "--format",
        "raw",
        "--duration",
        str(max(1, round(duration_s))),
        "--output",
        str(out),
    ]
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        load()
        output, _ = spy.communicate(timeout=duration_s + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        output, _ = spy.communicate()
    if spy.returncode != 0 or not out.exists():
        return f"py-spy failed ({spy.returncode}): {output.decode(errors='replace')[-500:]}"
    return summarize(out)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)"; keep function and file name.
    name, _, where = frame.partition(" (")
    file = where.rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file.split(':')[0]})" if file else name


def summarize(path: Path, top: int = 15) -> str:
    """Top functions by self and by inclusive samples from py-spy's collapsed-stack file."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [
        f"profile {path.name}: {total} samples (py-spy --nonblocking; idle waits included)",
        "  self %  function",
    ]
    lines += [f"  {100 * n / total:6.1f}  {name}" for name, n in self_time.most_common(top)]
    # The worker's bootstrap chain (granian, multiprocessing, the CLI) is on every stack: skip it.
    chain = max(inclusive.values())
    below = [(name, n) for name, n in inclusive.most_common() if n < 0.98 * chain][:top]
    lines += ["  incl %  function (bootstrap frames on every stack omitted)"]
    lines += [f"  {100 * n / total:6.1f}  {name}" for name, n in below]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.profile FILE.collapsed")
    print(summarize(Path(sys.argv[1])))
