"""The MQTT link to the fleet backend: lifecycle status, the outbox drained oldest first, commands in.

Delivery is at least once. A record leaves the outbox only after its QoS 1 PUBACK came back with
a success reason code; a connection lost between PUBACK and the delete re-sends it later, and the
backend de-duplicates on the envelope id. Several publishes are kept in flight (a window, like
TCP's) so an outbox full after an outage drains at the broker's pace rather than one round trip
per record; acks are deleted in batches, one fsync per batch.

Reconnection is ours (aiomqtt 2.x has none): every attempt gets a fresh client, so paho never
replays half-sent messages behind the outbox's back; subscriptions are made again each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kiosk.config import MqttConfig
from kiosk.fleet.outbox import Outbox, OutboxRecord, utc_now_iso
from kiosk.fleet.topics import Topics

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DRAIN_BATCH = 200
# Acks are deleted from the outbox in groups of this many (or when the window empties).
ACK_BATCH = 100
# A connection that lasted this long resets the backoff; a broker that accepts and then drops us
# at once (e.g. another device using our client id) keeps backing off instead of flapping.
STABLE_AFTER_S = 10.0

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]
ConnectHook = Callable[[], Awaitable[None]]


class FleetConfigError(ValueError):
    """mqtt.url cannot be used. Messages never repeat the URL: a later one may carry a password."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` (1883) or `mqtts://host[:port]` (TLS, 8883) -> BrokerAddress."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise FleetConfigError("mqtt.url is not a valid URL (expected mqtt://host:port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise FleetConfigError(f"mqtt.url: scheme {scheme!r} is not supported; use mqtt:// or mqtts://")
    if parts.username is not None or parts.password is not None:
        raise FleetConfigError("mqtt.url must not contain credentials")
    if not parts.hostname:
        raise FleetConfigError("mqtt.url has no host (expected mqtt://host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise FleetConfigError("mqtt.url must be just mqtt://host:port (no path, query or fragment)")
    if port == 0:
        raise FleetConfigError("mqtt.url: port 0 is not a broker port")
    tls = scheme == "mqtts"
    default = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    return BrokerAddress(parts.hostname, default if port is None else port, tls)


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """Verify the broker (hostname and chain) against ca_file or the system CAs; present the
    device's certificate when one is configured (mutual TLS)."""
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.cert_file is not None and config.key_file is not None:
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
    return context


class PublishRefused(aiomqtt.MqttError):
    """The broker answered a QoS 1 publish with a failure reason code (MQTT 5)."""


class TrackedClient(aiomqtt.Client):
    """aiomqtt 2.x lets publish() return on any PUBACK, even one whose MQTT 5 reason code says the
    broker refused the message (not authorized, quota exceeded), and it waits for each publish in
    turn. start_publish() returns a future per message that resolves with its PUBACK reason code,
    so several can be in flight and a refusal is never taken for a delivery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[ReasonCode | None]] = {}

    def start_publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, properties: Properties | None = None
    ) -> asyncio.Future[ReasonCode | None]:
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        future: asyncio.Future[ReasonCode | None] = self._loop.create_future()
        if qos == 0 or info.is_published():
            future.set_result(None)
        else:
            self._acks[info.mid] = future
        return future

    async def publish_checked(
        self, topic: str, payload: bytes, *, retain: bool = False, properties: Properties | None = None
    ) -> None:
        """QoS 1 publish that returns only on a successful PUBACK."""
        future = self.start_publish(topic, payload, retain=retain, properties=properties)
        await self.wait_ack(future, topic)

    async def wait_ack(self, future: asyncio.Future[ReasonCode | None], topic: str) -> None:
        if not future.done():
            await self._wait_ack(future, topic)
        reason = future.result()
        if reason is not None and reason.is_failure:
            raise PublishRefused(f"broker refused a publish to {topic}: {reason.getName()}")

    async def _wait_ack(self, future: asyncio.Future[ReasonCode | None], topic: str) -> None:
        disconnected: asyncio.Future[Any] = self._disconnected
        waiting: set[asyncio.Future[Any]] = {future, disconnected}
        done, _ = await asyncio.wait(waiting, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        if future not in done:
            if disconnected in done:
                raise aiomqtt.MqttError("disconnected while waiting for a PUBACK")
            raise aiomqtt.MqttError(f"no PUBACK for {topic} within {self.timeout:g} s")

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)


def status_payload(state: str, **fields: object) -> bytes:
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
        backoff_max_s: float | None = None,
    ) -> None:
        self._config = config
        self._topics = topics
        self._outbox = outbox
        self._client_id = client_id
        self._address = None if config.url is None else parse_mqtt_url(config.url)
        self._tls = tls_context(config) if self._address is not None and self._address.tls else None
        self._timeout_s = timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = config.backoff_max_s if backoff_max_s is None else backoff_max_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._client: TrackedClient | None = None
        self._connected = False
        self._delivered = 0
        self._session: int | None = None
        self._last_error: str | None = None
        self._state = "online"
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._next_replay = 0.0
        # What the rest of the kiosk plugs in: topics to subscribe, who gets their messages,
        # and what to (re)publish on every connection (birth, alarms, counters, discovery).
        self.subscriptions: list[str] = []
        self.message_handler: MessageHandler | None = None
        self.connect_hooks: list[ConnectHook] = []
        self.connections = 0

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

    @property
    def state(self) -> str:
        return self._state

    def notify(self) -> None:
        """Wake the drain loop; call from the event loop thread after Outbox.put_event."""
        self._wake.set()

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, properties: Properties | None = None
    ) -> bool:
        """Publish now, outside the outbox (replies, retained state); False when not connected or
        not acknowledged. Retained state is published again on every connection anyway."""
        client = self._client
        if client is None or not self._connected:
            return False
        try:
            await client.publish_checked(topic, payload, retain=retain, properties=properties)
        except aiomqtt.MqttError as exc:
            log.warning("fleet link: publish to %s failed: %s", topic, exc)
            return False
        return True

    async def set_state(self, state: str) -> None:
        """online or maintenance: the retained status while connected (the Will stays `lost`)."""
        self._state = state
        await self.publish(self._topics.status, self._status_now(), retain=True)

    def _status_now(self) -> bytes:
        return status_payload(self._state, ts=utc_now_iso(), session=self._session)

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
                    # Not a network problem (e.g. the outbox file, a TLS file); keep trying.
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("fleet link to %s failed", self._address)
                finally:
                    self._connected = False
                    self._client = None
                if self._stopping.is_set():
                    break
                failures = 1 if time.monotonic() - started >= STABLE_AFTER_S else failures + 1
                delay = self._backoff(failures)
                log.info("fleet link: reconnecting in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            for task in list(self._handler_tasks):
                task.cancel()
            self._stopped.set()

    def _backoff(self, failures: int) -> float:
        cap = min(self._backoff_max_s, self._backoff_initial_s * 2 ** min(failures - 1, 30))
        # "Equal jitter": never shorter than half the cap, yet a fleet that lost the broker at
        # the same moment does not come back in lockstep.
        return random.uniform(cap / 2, cap)

    async def aclose(self) -> None:
        """Finish the publishes in flight, publish retained "offline", disconnect cleanly (no
        Will), and stop run()."""
        self._stopping.set()
        self._wake.set()
        task = self._run_task
        if task is None or task.done() or task is asyncio.current_task():
            return
        # Bounded: the acks in flight, then the offline publish, then DISCONNECT.
        limit = 3 * self._timeout_s + 1
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), limit)
        except TimeoutError:
            log.warning("fleet link did not stop within %.0f s; cancelling it", limit)
            task.cancel()
            await asyncio.wait({task})

    # ------------------------------------------------------------------ one connection

    def _client_for(self, address: BrokerAddress, session: int) -> TrackedClient:
        will_props: Properties | None = None
        connect_props: Properties | None = None
        if self._config.will_delay_s > 0:
            # The Will Delay only matters while the session lives, so the session outlives the
            # connection by as long; clean_start still drops it on our own next connect.
            will_props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            will_props.WillDelayInterval = self._config.will_delay_s
            connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_props.SessionExpiryInterval = self._config.will_delay_s
        now = utc_now_iso()
        will = aiomqtt.Will(
            self._topics.status,
            status_payload("lost", session=session, ts=now, since=now),
            qos=1,
            retain=True,
            properties=will_props,
        )
        return TrackedClient(
            address.host,
            address.port,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=True,  # the outbox, not the broker session, holds what is undelivered
            keepalive=self._config.keepalive_s,
            timeout=self._timeout_s,
            properties=connect_props,
            tls_context=self._tls,
            max_inflight_messages=self._config.max_inflight,
        )

    async def _connect_once(self, address: BrokerAddress) -> None:
        session = self._outbox.next_session()
        self._session = session
        client = self._client_for(address, session)
        async with client:
            self._client = client
            await client.publish_checked(self._topics.status, self._status_now(), retain=True)
            for topic in self.subscriptions:
                granted = await client.subscribe(topic, qos=1)
                if any(isinstance(g, ReasonCode) and g.is_failure for g in granted):
                    log.warning("fleet link: subscription to %s refused: %s", topic, granted)
            self._connected = True
            self._last_error = None
            self.connections += 1
            log.info("fleet link online at %s (session %d, %d queued)", address, session, self._outbox.depth())
            for hook in self.connect_hooks:
                try:
                    await hook()
                except aiomqtt.MqttError:
                    raise
                except Exception:
                    log.exception("fleet link: a connect hook failed")
            await self._serve(client)

    async def _serve(self, client: TrackedClient) -> None:
        """Drain and watch the connection until it fails (raise) or aclose() asks (return)."""
        drain = asyncio.create_task(self._drain(client), name="fleet-drain")
        watch = asyncio.create_task(self._watch(client), name="fleet-watch")
        try:
            done, _ = await asyncio.wait((drain, watch), return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                watch.result()  # re-raises why the connection ended
                raise aiomqtt.MqttError("the connection ended")
            drain.result()  # returns only when stopping; raises why it failed otherwise
            self._connected = False
            try:
                offline = status_payload("offline", ts=utc_now_iso(), session=self._session)
                await client.publish_checked(self._topics.status, offline, retain=True)
            except aiomqtt.MqttError as exc:
                log.warning("fleet link: could not publish offline status: %s", exc)
        finally:
            for task in (drain, watch):
                task.cancel()
            await asyncio.gather(drain, watch, return_exceptions=True)

    async def _drain(self, client: TrackedClient) -> None:
        """Publish the outbox oldest first with up to max_inflight unacknowledged; delete on ack."""
        window: deque[tuple[OutboxRecord, asyncio.Future[ReasonCode | None]]] = deque()
        acked: list[str] = []
        # Records already queued when this connection came up are replays: flagged historical
        # and rate-limited. Records put while connected go out as live ones, at once.
        historical_upto = self._outbox.last_pos()
        last_pos = 0
        try:
            while True:
                # Clear before reading: a notify() after this point is seen by the next wait.
                self._wake.clear()
                stopping = self._stopping.is_set()
                batch = [] if stopping else self._outbox.pending(DRAIN_BATCH, after_pos=last_pos)
                if not batch:
                    while window:
                        await self._complete(client, window, acked)
                    self._flush(acked)
                    if stopping:
                        return
                    await self._wake.wait()
                    continue
                for record in batch:
                    if self._stopping.is_set():
                        break
                    while len(window) >= self._config.max_inflight:
                        await self._complete(client, window, acked)
                    historical = record.pos <= historical_upto
                    if historical:
                        await self._pace_replay()
                    payload = record.historical_payload() if historical else record.payload
                    window.append((record, client.start_publish(record.topic, payload)))
                    last_pos = record.pos
                    if len(acked) >= ACK_BATCH:
                        self._flush(acked)
        finally:
            self._flush(acked)

    async def _complete(
        self,
        client: TrackedClient,
        window: deque[tuple[OutboxRecord, asyncio.Future[ReasonCode | None]]],
        acked: list[str],
    ) -> None:
        record, future = window[0]
        await client.wait_ack(future, record.topic)
        window.popleft()
        acked.append(record.id)

    def _flush(self, acked: list[str]) -> None:
        if acked:
            self._outbox.ack_many(acked)
            self._delivered += len(acked)
            acked.clear()

    async def _pace_replay(self) -> None:
        rate = self._config.replay_rate_per_s
        if rate <= 0:
            return
        now = time.monotonic()
        self._next_replay = max(self._next_replay, now) + 1.0 / rate
        ahead = self._next_replay - now
        if ahead > 0.02:  # sleep in slices of >= 20 ms; a timer per message would cost more
            await asyncio.sleep(ahead)

    async def _watch(self, client: TrackedClient) -> None:
        # aiomqtt ends this iteration with MqttError when the connection drops (keepalive
        # timeout, socket closed): that is also how an idle link notices.
        async for message in client.messages:
            handler = self.message_handler
            if handler is None:
                log.debug("fleet link: ignoring message on %s", message.topic)
                continue
            # Each message in its own task: a refund that retries must not hold up a ping.
            task = asyncio.create_task(self._handle(handler, message), name="fleet-command")
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)

    @staticmethod
    async def _handle(handler: MessageHandler, message: aiomqtt.Message) -> None:
        try:
            await handler(message)
        except Exception:
            log.exception("fleet link: handling a message on %s failed", message.topic)
