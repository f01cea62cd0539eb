"""Integration fixtures: a real nats-server (see ``tests/nats_fixtures.py``)."""

from tests.nats_fixtures import nats_server, nats_server_factory  # noqa: F401
