"""Config reload without a restart: SIGHUP, a change of the file, or a NATS KV bucket.

Every source ends in the same call, ``apply(text, origin)``: parse and validate the whole
file, build a new :class:`~gateway.runtime.Runtime`, swap the app's reference. A bad config
is rejected with a logged error and the running one stays. In-flight requests keep the
runtime they started with; the old runtime's clients are closed after the drain timeout.

Sections read once at start-up (``tracing``, ``exporter``, ``cluster``, ``server``) are process
wiring: a change to them is logged and needs a restart; keys, access rules, rate limits,
providers and routing change live.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, GatewayConfig, parse_config

log = logging.getLogger("gateway.reload")

RESTART_ONLY = ("tracing", "exporter", "cluster", "server")


class ConfigReloader:
    """Watches the config sources of one worker and swaps its runtime on a valid change."""

    def __init__(
        self,
        current: GatewayConfig,
        swap: Callable[[GatewayConfig], None],
        path: str | None,
        poll_interval_s: float,
    ) -> None:
        self._current = current
        self._swap = swap
        self._path = Path(path) if path else None
        self._poll_interval_s = poll_interval_s
        self._file_digest = self._digest_file()
        self._tasks: list[asyncio.Task[None]] = []
        self._nc: Any = None
        self.reloads = 0
        self.rejected = 0

    # --- the one entry point ----------------------------------------------------------------

    def apply(self, text: str, origin: str) -> bool:
        """Validate ``text`` and swap it in; False (old config kept) when it is invalid."""
        try:
            cfg = parse_config(text, source=origin)
        except ConfigError as exc:
            self.rejected += 1
            log.error(
                "config reload from %s rejected, keeping the running config:\n  %s",
                origin,
                "\n  ".join(exc.problems),
            )
            return False
        if cfg == self._current:
            return True
        for section in RESTART_ONLY:
            if getattr(cfg, section) != getattr(self._current, section):
                log.warning(
                    "config reload from %s: '%s' changed; it takes effect after a restart", origin, section
                )
        try:
            self._swap(cfg)
        except Exception:
            self.rejected += 1
            log.exception(
                "config reload from %s failed while building the new runtime; keeping the old one", origin
            )
            return False
        self._current = cfg
        self.reloads += 1
        log.info("config reloaded from %s", origin)
        return True

    # --- sources -------------------------------------------------------------------------------

    def reload_file(self) -> None:
        """SIGHUP handler: re-read the file now."""
        if self._path is None:
            log.warning("SIGHUP: no config file to reload")
            return
        try:
            text = self._path.read_text(encoding="utf-8")
        except OSError as exc:
            log.error("SIGHUP: cannot read %s: %s; keeping the running config", self._path, exc.strerror)
            return
        self._file_digest = hashlib.sha256(text.encode()).digest()
        self.apply(text, str(self._path))

    def _digest_file(self) -> bytes | None:
        if self._path is None:
            return None
        try:
            return hashlib.sha256(self._path.read_bytes()).digest()
        except OSError:
            return None

    async def _poll_file(self) -> None:
        # Polling a digest rather than inotify: works on ConfigMap mounts (symlink swaps) and
        # costs one small read per interval, off the request path.
        while True:
            await asyncio.sleep(self._poll_interval_s)
            digest = self._digest_file()
            if digest is not None and digest != self._file_digest:
                self._file_digest = digest
                assert self._path is not None
                self.apply(self._path.read_text(encoding="utf-8"), str(self._path))

    async def _watch_kv(self, url: str, bucket: str, key: str) -> None:
        import nats
        from nats.js.errors import BucketNotFoundError

        backoff = 0.5
        while True:
            try:
                if self._nc is None or self._nc.is_closed:
                    self._nc = await nats.connect(
                        url,
                        allow_reconnect=True,
                        max_reconnect_attempts=-1,
                        connect_timeout=2,
                        name="gateway-config",
                    )
                js = self._nc.jetstream()
                try:
                    kv = await js.key_value(bucket)
                except BucketNotFoundError:
                    kv = await js.create_key_value(bucket=bucket)
                watcher = await kv.watch(key)
                backoff = 0.5
                async for entry in watcher:
                    if entry is None or entry.value is None or entry.operation is not None:
                        continue  # initial marker, or a delete/purge: keep the running config
                    self.apply(entry.value.decode("utf-8", "replace"), f"nats-kv:{bucket}/{key}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS down or bucket unusable: keep serving, retry later
                log.warning(
                    "config KV watch on %s/%s unavailable (%s); retrying", bucket, key, type(exc).__name__
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(
        self, loop: asyncio.AbstractEventLoop, watch_file: bool, kv: tuple[str, str, str] | None
    ) -> None:
        """Start the background watchers on ``loop`` (which may not be running yet)."""
        if watch_file and self._path is not None and self._poll_interval_s > 0:
            self._tasks.append(loop.create_task(self._poll_file()))
        if kv is not None:
            self._tasks.append(loop.create_task(self._watch_kv(*kv)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: S110 - stopping: errors were logged
                pass
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.close(), 2)
            except Exception:  # noqa: S110 - best effort at shutdown
                pass
