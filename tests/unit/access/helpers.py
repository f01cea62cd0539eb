"""Keys and a config shared by the access-control unit tests."""

from __future__ import annotations

import hashlib

ALICE_KEY = "sk-alice-0123456789"
BOT_KEY = "sk-bot-abcdef"
BOB_KEY = "sk-bob-zzz"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


CONFIG = f"""
providers:
  - {{name: openai-main, base_url: "http://127.0.0.1:1/v1", models: [gpt-4o, gpt-4o-mini]}}
  - {{name: azure-eu, base_url: "http://127.0.0.1:2/v1", models: [gpt-4o]}}
virtual_models:
  - {{name: chat-default, load_balance_targets: [{{target: openai-main/gpt-4o}}]}}
auth:
  api_keys:
    - {{subject: "user:alice", teams: [ml], key_sha256: "{sha(ALICE_KEY)}"}}
    - {{subject: "virtualaccount:ci-bot", key_sha256: "{sha(BOT_KEY)}"}}
    - {{subject: "user:bob", key_sha256: "{sha(BOB_KEY)}"}}
access:
  - {{subjects: ["team:ml", "user:bob"], models: ["openai-main/*", "chat-default"]}}
  - {{subjects: ["virtualaccount:ci-bot"], models: ["azure-eu/gpt-4o"]}}
rate_limiting:
  - id: bot-rpm
    when: {{subjects: ["virtualaccount:ci-bot"]}}
    limit_to: 3
    unit: requests_per_minute
    rate_limit_applies_per: [user]
  - id: prod-tpm
    when: {{models: ["openai-main/*"], metadata: {{env: prod}}}}
    limit_to: 1000
    unit: tokens_per_minute
    rate_limit_applies_per: [user, model]
"""
