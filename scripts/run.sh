#!/usr/bin/env bash
# `make run`: the bundled mock provider and the gateway in embedded mode, in the foreground.
set -euo pipefail
CONFIG=${1:-examples/gateway.yaml}
PORT=${2:-8000}
export MOCK_PORT=${3:-8099}
BIN=.venv/bin

"$BIN/python" -m bench.mock_upstream --port "$MOCK_PORT" &
MOCK_PID=$!
trap 'kill $MOCK_PID 2>/dev/null || true' EXIT

cat <<MSG

  LLM gateway on http://127.0.0.1:$PORT   (config: $CONFIG, mock provider on :$MOCK_PORT)
  Traces, dashboard:  http://127.0.0.1:$PORT/ui   (stored in data/traces.duckdb)

  curl http://127.0.0.1:$PORT/v1/chat/completions -H 'content-type: application/json' \\
       -d '{"model": "mock/gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'

  $BIN/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:$PORT/v1", api_key="unused-without-auth")
print(client.chat.completions.create(model="mock/gpt-4o",
      messages=[{"role": "user", "content": "hello"}]).choices[0].message.content)
PY
$( [ -n "${OPENAI_API_KEY:-}" ] && echo "  OPENAI_API_KEY is set: openai-main/gpt-4o and friends are served too." )
  Ctrl-C stops both.

MSG
"$BIN/gateway" serve --config "$CONFIG" --port "$PORT"
