"""New-head announcements over a websocket ``eth_subscribe ["newHeads"]`` subscription.

The subscription only wakes the watcher early; requests still go over HTTP (:mod:`chains.evm.rpc`). So it is best
effort and never raises into its caller: while no websocket is connected, :meth:`NewHeadsSubscription.wait` simply
times out and the watcher polls as it would without one.

Connection policy: the URLs are tried in configured order; a failed connection or subscription fails over to the
next URL at once. When every URL has failed in a row, the next round waits a full-jitter exponential backoff
(``backoff_base_s`` doubling up to ``backoff_max_s``). A subscription that delivered heads and then dropped starts a
new round from the first URL after a short jittered pause; one that dropped before delivering any head counts as a
failure of its URL. A subscription silent for ``idle_timeout_s`` is treated as stale and replaced; aiohttp's
heartbeat (ping/pong) detects dead TCP connections.

Secrets: an endpoint is only named by :func:`chains.redact.redact_url`; error texts from aiohttp are scrubbed of the
URL, its path and its query. Every connection attempt and every lost subscription is reported to the observer as
``rpc_request(chain, label, "eth_subscribe", duration_s, outcome)``; a notification without the documented shape is
ignored and reported as ``skipped_item(chain, "malformed_head", where)`` (``where``: the redacted endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from chains.base import NullObserver, RpcObserver
from chains.redact import redact_url, scrub, scrub_urls, secrets_of

log = logging.getLogger(__name__)

_SUBSCRIBE_ID = 1


class _SubscriptionFailed(Exception):
    """A connection attempt or a live subscription ended; ``outcome`` is the observer's label for why."""

    def __init__(self, outcome: str, detail: str, *, delivered: bool = False) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.delivered = delivered


class NewHeadsSubscription:
    """One chain's new-head subscription over ``ws_urls`` (``ws://`` or ``wss://``).

    Starts on the first :meth:`wait` or on :meth:`start`; :meth:`aclose` stops it (safe to call twice).
    ``latest_number`` is the number of the last announced head (None before the first), ``heads_received``
    how many well-formed announcements arrived, ``connected`` whether a subscription is live right now and
    ``subscription_id`` the node's id of the latest one.
    """

    def __init__(
        self,
        ws_urls: Sequence[str],
        *,
        chain: str,
        observer: RpcObserver | None = None,
        connect_timeout_s: float = 10.0,
        heartbeat_s: float = 20.0,
        idle_timeout_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if not ws_urls:
            raise ValueError(f"{chain}: no websocket URL for the new-heads subscription")
        self.chain = chain
        self.observer: RpcObserver = observer or NullObserver()
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_s = heartbeat_s
        self.idle_timeout_s = idle_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._urls = list(ws_urls)
        self._labels = [redact_url(u) for u in self._urls]
        self._secrets = [secrets_of(u) for u in self._urls]
        self.latest_number: int | None = None
        self.heads_received = 0
        self.connected = False
        self.subscription_id: str | None = None
        self._new_head = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._rng = random.Random()

    @property
    def endpoint_labels(self) -> list[str]:
        return list(self._labels)

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start connecting in the background (needs a running event loop). Does nothing while running or once
        closed."""
        if self._closed or (self._task is not None and not self._task.done()):
            return
        if self._task is not None and not self._task.cancelled() and self._task.exception() is not None:
            log.error(  # a bug, not a connection problem (those are retried inside): restart, do not raise
                "new-heads subscription task ended, restarting",
                extra={"fields": {"chain": self.chain, "error": type(self._task.exception()).__name__}},
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.chain}-new-heads")

    async def aclose(self) -> None:
        """Stop the subscription and close its connection. Safe to call twice."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected = False

    async def wait(self, timeout_s: float) -> bool:
        """True as soon as a head has been announced since the last ``wait`` that returned True (one that arrived
        while nobody waited returns at once, so no announcement is lost); False after ``timeout_s`` without one.
        Never raises (cancellation aside); after :meth:`aclose` it just waits out the timeout."""
        if self._closed:
            await asyncio.sleep(timeout_s)
            return False
        self.start()
        try:
            async with asyncio.timeout(timeout_s):
                await self._new_head.wait()
        except TimeoutError:
            return False
        self._new_head.clear()
        return True

    # ------------------------------------------------------------------------------------------- connection loop

    async def _run(self) -> None:
        failures = 0  # attempts in a row that failed, across URLs
        async with aiohttp.ClientSession() as session:
            while not self._closed:
                for i in range(len(self._urls)):
                    failed = await self._attempt(session, i)
                    if not failed:
                        failures = 0
                        await asyncio.sleep(self._rng.uniform(self.backoff_base_s / 2, self.backoff_base_s))
                        break  # a subscription that worked dropped: start over from the first URL
                    failures += 1
                else:
                    rounds = min(failures // len(self._urls), 32)  # bounded: 2 ** rounds stays a float
                    cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (rounds - 1))
                    await asyncio.sleep(self._rng.uniform(cap / 2, cap))

    async def _attempt(self, session: aiohttp.ClientSession, i: int) -> bool:
        """Connect to URL ``i``, subscribe and read heads until the subscription ends. True when it failed before
        delivering a head (the caller fails over), False when it delivered heads and then dropped."""
        label = self._labels[i]
        started = time.perf_counter()
        try:
            await self._subscribe_and_read(session, i, started)
        except asyncio.CancelledError:
            raise
        except _SubscriptionFailed as exc:
            self.observer.rpc_request(
                self.chain, label, "eth_subscribe", time.perf_counter() - started, exc.outcome
            )
            log.warning(
                "new-heads subscription lost, reconnecting"
                if exc.delivered
                else "new-heads subscription failed",
                extra={
                    "fields": {
                        "chain": self.chain,
                        "endpoint": label,
                        "outcome": exc.outcome,
                        "error": self._clean(i, str(exc)),
                    }
                },
            )
            return not exc.delivered
        except Exception as exc:  # never raise into the watcher: anything unexpected is a failed attempt
            self.observer.rpc_request(
                self.chain, label, "eth_subscribe", time.perf_counter() - started, "connection_error"
            )
            log.warning(
                "new-heads subscription failed",
                extra={
                    "fields": {
                        "chain": self.chain,
                        "endpoint": label,
                        "outcome": "connection_error",
                        "error": self._clean(i, f"{type(exc).__name__}: {exc}"),
                    }
                },
            )
            return True
        finally:
            self.connected = False
        return False  # pragma: no cover - _subscribe_and_read only ends by raising

    async def _subscribe_and_read(self, session: aiohttp.ClientSession, i: int, started: float) -> None:
        url = self._urls[i]
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                ws = await session.ws_connect(url, heartbeat=self.heartbeat_s, max_msg_size=16 * 1024 * 1024)
        except TimeoutError as exc:
            raise _SubscriptionFailed("timeout", f"no websocket within {self.connect_timeout_s} s") from exc
        except aiohttp.WSServerHandshakeError as exc:
            raise _SubscriptionFailed(
                "http_error", f"websocket handshake refused: HTTP {exc.status}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _SubscriptionFailed("connection_error", f"{type(exc).__name__}: {exc}") from exc
        async with ws:
            sub_id = await self._subscribe(ws)
            self.subscription_id = sub_id
            self.connected = True
            self.observer.rpc_request(
                self.chain, self._labels[i], "eth_subscribe", time.perf_counter() - started, "ok"
            )
            log.info(
                "new-heads subscription live",
                extra={"fields": {"chain": self.chain, "endpoint": self._labels[i]}},
            )
            delivered = 0
            subscribed_at = time.perf_counter()
            while True:
                try:
                    msg = await ws.receive(timeout=self.idle_timeout_s)
                except TimeoutError as exc:
                    raise _SubscriptionFailed(
                        "timeout", f"no announcement for {self.idle_timeout_s} s", delivered=delivered > 0
                    ) from exc
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    if self._on_message(msg.data, sub_id, self._labels[i]):
                        delivered += 1
                    continue
                if msg.type == aiohttp.WSMsgType.ERROR:
                    detail = f"websocket error: {type(msg.data).__name__}: {msg.data}"
                else:
                    detail = (
                        f"websocket closed by the server (code {ws.close_code}) after "
                        f"{time.perf_counter() - subscribed_at:.1f} s"
                    )
                raise _SubscriptionFailed("connection_error", detail, delivered=delivered > 0)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        request = {"jsonrpc": "2.0", "id": _SUBSCRIBE_ID, "method": "eth_subscribe", "params": ["newHeads"]}
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await ws.send_str(orjson.dumps(request).decode())
                while True:
                    msg = await ws.receive()
                    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        raise _SubscriptionFailed(
                            "connection_error", "websocket closed before the subscription"
                        )
                    reply = _loads(msg.data)
                    if not isinstance(reply, dict) or reply.get("id") != _SUBSCRIBE_ID:
                        continue  # not the answer to our request
                    if reply.get("error") is not None:
                        error = reply["error"]
                        code = error.get("code") if isinstance(error, dict) else None
                        text = str(error.get("message", ""))[:200] if isinstance(error, dict) else ""
                        raise _SubscriptionFailed(
                            "rpc_error", f"eth_subscribe refused: JSON-RPC error {code}: {text}"
                        )
                    result = reply.get("result")
                    if not isinstance(result, str) or not result:
                        raise _SubscriptionFailed(
                            "malformed", "eth_subscribe answered without a subscription id"
                        )
                    return result
        except TimeoutError as exc:
            raise _SubscriptionFailed(
                "timeout", f"eth_subscribe unanswered within {self.connect_timeout_s} s"
            ) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise _SubscriptionFailed("connection_error", f"{type(exc).__name__}: {exc}") from exc

    def _on_message(self, data: str | bytes, sub_id: str, label: str) -> bool:
        """Handle one message of a live subscription; True when it announced a head."""
        message = _loads(data)
        if not isinstance(message, dict) or message.get("method") != "eth_subscription":
            if not (isinstance(message, dict) and "id" in message):  # a stray reply is fine; garbage is not
                self.observer.skipped_item(self.chain, "malformed_head", f"new head via {label}")
            return False
        params = message.get("params")
        if not isinstance(params, dict) or params.get("subscription") != sub_id:
            if not isinstance(params, dict):
                self.observer.skipped_item(self.chain, "malformed_head", f"new head via {label}")
            return False  # another subscription's notification
        head = params.get("result")
        number = head.get("number") if isinstance(head, dict) else None
        try:
            value = int(number, 16) if isinstance(number, str) and number.startswith(("0x", "0X")) else None
        except ValueError:
            value = None
        if value is None:
            self.observer.skipped_item(self.chain, "malformed_head", f"new head via {label}")
            return False
        self.latest_number = value
        self.heads_received += 1
        self._new_head.set()
        return True

    def _clean(self, i: int, text: str) -> str:
        return scrub(scrub_urls(text), self._secrets[i])[:300]


def _loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
