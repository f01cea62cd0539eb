"""A do-nothing OTLP/HTTP receiver so the exporter has a real destination during benchmarks.

Answers every POST with 200 and an empty protobuf ``ExportTraceServiceResponse`` and counts the
bytes it received (``GET /stats``). Runs on the load CPU beside the mock, never on the target's.

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import os
from typing import Any

_stats = {"requests": 0, "bytes": 0}
PROTO = [("content-type", "application/x-protobuf")]


class SinkApp:
    """RSGI app: ``POST *`` → 200 empty body; ``GET /stats`` → counters as JSON."""

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.method == "POST":
            body = await proto()
            _stats["requests"] += 1
            _stats["bytes"] += len(body)
            proto.response_bytes(200, PROTO, b"")
            return
        text = f'{{"requests":{_stats["requests"]},"bytes":{_stats["bytes"]}}}'
        proto.response_str(200, [("content-type", "application/json")], text)


app = SinkApp()


def main(argv: list[str] | None = None) -> None:
    """Serve the sink with one granian RSGI worker."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SINK_PORT", "4318")))
    args = parser.parse_args(argv)
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        "bench.otlp_sink:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=1,
        log_level=LogLevels.warning,
    ).serve()


if __name__ == "__main__":
    main()
