"""The MQTT link to the fleet backend: lifecycle status, and the outbox drained oldest first.

Delivery is at least once. A record leaves the outbox only after its QoS 1 PUBACK came back with
a success reason code; a connection lost between PUBACK and the delete re-sends it later, and the
backend de-duplicates on the envelope id. Reconnection is ours (aiomqtt 2.x has none): every
attempt gets a fresh client, so paho never replays half-sent messages behind the outbox's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kiosk.config import MqttConfig
from kiosk.fleet.outbox import Outbox, utc_now_iso
from kiosk.fleet.topics import Topics

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DRAIN_BATCH = 50
# A connection that lasted this long resets the backoff; a broker that accepts and then drops us
# at once (e.g. another device using our client id) keeps backing off instead of flapping.
STABLE_AFTER_S = 10.0


class FleetConfigError(ValueError):
    """mqtt.url cannot be used. Messages never repeat the URL: a later one may carry a password."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` -> BrokerAddress (port 1883 by default)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise FleetConfigError("mqtt.url is not a valid URL (expected mqtt://host:port)") from None
    scheme = parts.scheme.lower()
    if scheme == "mqtts":
        raise FleetConfigError("mqtt.url: mqtts:// (TLS) is not supported yet; use mqtt://host:port")
    if scheme != "mqtt":
        raise FleetConfigError(f"mqtt.url: scheme {scheme!r} is not supported; use mqtt://host:port")
    if parts.username is not None or parts.password is not None:
        raise FleetConfigError("mqtt.url must not contain credentials")
    if not parts.hostname:
        raise FleetConfigError("mqtt.url has no host (expected mqtt://host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise FleetConfigError("mqtt.url must be just mqtt://host:port (no path, query or fragment)")
    if port == 0:
        raise FleetConfigError("mqtt.url: port 0 is not a broker port")
    return BrokerAddress(parts.hostname, DEFAULT_PORT if port is None else port)


class PublishRefused(aiomqtt.MqttError):
    """The broker answered a QoS 1 publish with a failure reason code (MQTT 5)."""


class _Client(aiomqtt.Client):
    """aiomqtt 2.x lets publish() return on any PUBACK, even one whose MQTT 5 reason code says the
    broker refused the message (not authorized, quota exceeded). Deleting a sale on such an ack
    would lose it, so refusals are remembered here. FleetLink has at most one publish in flight
    per client, so a refusal seen while a publish was awaited belongs to that publish."""

    refused: ReasonCode | None = None

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        if reason_code.is_failure:
            self.refused = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)


def _status(state: str, **fields: object) -> bytes:
    return json.dumps({"state": state, **fields}, separators=(",", ":")).encode()


class FleetLink:
    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        outbox: Outbox,
        *,
        client_id: str,
        timeout_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self._config = config
        self._topics = topics
        self._outbox = outbox
        self._client_id = client_id
        self._address = None if config.url is None else parse_mqtt_url(config.url)
        self._timeout_s = timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        # Held around publish + outbox ack, so shutdown never cuts a record between the two.
        self._publish_lock = asyncio.Lock()
        self._run_task: asyncio.Task[None] | None = None
        self._connected = False
        self._delivered = 0
        self._session: int | None = None
        self._last_error: str | None = None

    # ------------------------------------------------------------------ public state

    @property
    def address(self) -> BrokerAddress | None:
        return self._address

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def delivered(self) -> int:
        """Records acknowledged by the broker (and deleted from the outbox) since start."""
        return self._delivered

    @property
    def session(self) -> int | None:
        """The connection number in the current (or last) status messages."""
        return self._session

    @property
    def last_error(self) -> str | None:
        """Why the last connection failed or ended; None while connected."""
        return self._last_error

    def notify(self) -> None:
        """Wake the drain loop; call from the event loop thread after Outbox.put_event."""
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Connect, drain, reconnect, until aclose(). Raises only CancelledError."""
        if self._address is None:
            log.info("fleet link: no mqtt.url configured; events stay in the outbox")
            return
        if self._run_task is not None and not self._run_task.done():
            raise RuntimeError("FleetLink.run() is already running")
        self._run_task = asyncio.current_task()
        self._stopped.clear()
        failures = 0
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    await self._connect_once(self._address)
                except aiomqtt.MqttError as exc:
                    # aiomqtt chains the real reason (e.g. keepalive timeout) as the cause.
                    cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
                    self._last_error = f"{type(exc).__name__}: {exc}{cause}"
                    log.warning("fleet link to %s: %s", self._address, self._last_error)
                except Exception as exc:
                    # Not a network problem (e.g. the outbox file); keep the link alive and retry.
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("fleet link to %s failed", self._address)
                finally:
                    self._connected = False
                if self._stopping.is_set():
                    break
                failures = 1 if time.monotonic() - started >= STABLE_AFTER_S else failures + 1
                delay = self._backoff(failures)
                log.info("fleet link: reconnecting in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._stopped.set()

    def _backoff(self, failures: int) -> float:
        cap = min(self._backoff_max_s, self._backoff_initial_s * 2 ** min(failures - 1, 30))
        # "Equal jitter": never shorter than half the cap, yet a fleet that lost the broker at
        # the same moment does not come back in lockstep.
        return random.uniform(cap / 2, cap)

    async def aclose(self) -> None:
        """Publish retained "offline", disconnect cleanly (no Will), and stop run()."""
        self._stopping.set()
        task = self._run_task
        if task is None or task.done() or task is asyncio.current_task():
            return
        # Bounded: waiting for an in-flight publish, then the offline publish, then DISCONNECT.
        limit = 3 * self._timeout_s + 1
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), limit)
        except TimeoutError:
            log.warning("fleet link did not stop within %.0f s; cancelling it", limit)
            task.cancel()
            await asyncio.wait({task})

    # ------------------------------------------------------------------ one connection

    async def _connect_once(self, address: BrokerAddress) -> None:
        session = self._outbox.next_session()
        self._session = session
        will = aiomqtt.Will(
            self._topics.status,
            _status("lost", session=session, since=utc_now_iso()),
            qos=1,
            retain=True,
        )
        client = _Client(
            address.host,
            address.port,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=True,  # the outbox, not the broker session, holds what is undelivered
            keepalive=self._config.keepalive_s,
            timeout=self._timeout_s,
        )
        async with client:
            async with self._publish_lock:
                online = _status("online", ts=utc_now_iso(), session=session)
                await self._publish(client, self._topics.status, online, retain=True)
            self._connected = True
            self._last_error = None
            log.info("fleet link online at %s (session %d, %d queued)", address, session, self._outbox.depth())
            await self._serve(client)

    async def _serve(self, client: _Client) -> None:
        """Drain and watch the connection until it fails (raise) or aclose() asks (return)."""
        drain = asyncio.create_task(self._drain(client), name="fleet-drain")
        watch = asyncio.create_task(self._watch(client), name="fleet-watch")
        stop = asyncio.create_task(self._stopping.wait(), name="fleet-stop")
        tasks = (drain, watch, stop)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if watch in done or drain in done:
                failed = watch if watch in done else drain
                failed.result()  # re-raises why the connection ended
                raise aiomqtt.MqttError(f"{failed.get_name()} ended unexpectedly")
            await self._say_offline(client, drain)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _say_offline(self, client: _Client, drain: asyncio.Task[None]) -> None:
        async with self._publish_lock:  # lets a publish in flight finish and get its ack
            drain.cancel()
            offline = _status("offline", ts=utc_now_iso(), session=self._session)
            try:
                await self._publish(client, self._topics.status, offline, retain=True)
            except aiomqtt.MqttError as exc:
                log.warning("fleet link: could not publish offline status: %s", exc)

    async def _drain(self, client: _Client) -> None:
        while True:
            # Clear before reading: a notify() after this point is seen by the next wait.
            self._wake.clear()
            batch = self._outbox.pending(DRAIN_BATCH)
            if not batch:
                await self._wake.wait()
                continue
            for record in batch:
                async with self._publish_lock:
                    await self._publish(client, record.topic, record.payload, retain=False)
                    # Only now: publish() returned, so a successful PUBACK for it arrived.
                    self._outbox.ack(record.id)
                    self._delivered += 1

    async def _watch(self, client: _Client) -> None:
        # Nothing is subscribed yet, but aiomqtt ends this iteration with MqttError when the
        # connection drops (keepalive timeout, socket closed): that is how an idle link notices.
        async for message in client.messages:
            log.debug("fleet link: ignoring message on %s", message.topic)

    async def _publish(self, client: _Client, topic: str, payload: bytes, *, retain: bool) -> None:
        """QoS 1 publish that returns only on a successful PUBACK; caller holds _publish_lock."""
        client.refused = None
        await client.publish(topic, payload, qos=1, retain=retain)
        if client.refused is not None:
            raise PublishRefused(f"broker refused a publish to {topic}: {client.refused.getName()}")
