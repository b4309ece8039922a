"""TLS, mutual TLS and the shipped ACL (config/mosquitto/acl) on a real Mosquitto, with a CA and
certificates generated here: a kiosk can neither publish nor read as another kiosk."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from broker import Mosquitto
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleet_helpers import REPO, wait_until

from kiosk.config import MqttConfig
from kiosk.fleet import FleetLink, Outbox, Topics
from kiosk.fleet.link import PublishRefused, TrackedClient, tls_context

ACL = REPO / "config" / "mosquitto" / "acl"


@dataclass
class Pki:
    dir: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def issue(self, name: str, *, server: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path


def make_pki(directory: Path, name: str = "Kiosk Fleet Test CA") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    pki = Pki(directory, key, cert)
    pki.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_broker(factory: Callable[..., Mosquitto], pki: Pki, *, mutual: bool) -> Mosquitto:
    cert, key = pki.issue("broker", server=True)
    lines = [f"cafile {pki.ca_file}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
    if mutual:
        # As config/mosquitto/mosquitto.conf: the certificate CN is the username, and the ACL.
        lines += ["require_certificate true", "use_identity_as_username true", f"acl_file {ACL}"]
    broker = factory(extra_config="\n".join(lines))
    broker.start()
    return broker


def tls_url(broker: Mosquitto) -> str:
    return f"mqtts://127.0.0.1:{broker.port}"


def client(broker: Mosquitto, pki: Pki, name: str | None, *, ca: Path | None = None) -> TrackedClient:
    cert_key = pki.issue(name) if name else (None, None)
    config = MqttConfig(ca_file=ca or pki.ca_file, cert_file=cert_key[0], key_file=cert_key[1])
    return TrackedClient("127.0.0.1", broker.port, identifier=name, protocol=aiomqtt.ProtocolVersion.V5,
                         tls_context=tls_context(config), timeout=5)


async def test_kiosk_link_over_mutual_tls_and_the_console_sees_it(
    tmp_path: Path, pki: Pki, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = tls_broker(mosquitto_factory, pki, mutual=True)
    cert, key = pki.issue("kiosk-a")
    topics = Topics("kiosk/v1", "f1", "kiosk-a")
    outbox = Outbox(tmp_path / "outbox.sqlite", topics)
    config = MqttConfig(url=tls_url(broker), ca_file=pki.ca_file, cert_file=cert, key_file=key, will_delay_s=0)
    link = FleetLink(config, topics, outbox, client_id="kiosk-a", backoff_initial_s=0.2, backoff_max_s=0.5)
    outbox.put_event("sale", {"amount_minor": 250}, money=True)
    console = client(broker, pki, "fleet-console")
    async with console:
        await console.subscribe("kiosk/v1/#", qos=1)
        run = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(15):
                async for message in console.messages:
                    if str(message.topic).endswith("/events/sale"):
                        break
            await wait_until(lambda: outbox.depth() == 0, what="the ack over mTLS")
        finally:
            await link.aclose()
            await asyncio.wait_for(run, 5)


async def test_a_kiosk_cannot_publish_or_read_as_another(
    pki: Pki, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = tls_broker(mosquitto_factory, pki, mutual=True)
    a, b, console = client(broker, pki, "kiosk-a"), client(broker, pki, "kiosk-b"), client(broker, pki, "fleet-console")
    async with a, b, console:
        await console.subscribe("kiosk/v1/#", qos=1)
        # Its own subtree: accepted.
        await a.publish_checked("kiosk/v1/f1/kiosk-a/status", b'{"state":"online"}')
        # Another kiosk's status, events, alarms and replies: refused with a reason code.
        for topic in ("kiosk/v1/f1/kiosk-b/status", "kiosk/v1/f1/kiosk-b/events/sale",
                      "kiosk/v1/f1/kiosk-b/alarms/x", "kiosk/v1/f1/kiosk-b/reply/c/1",
                      "kiosk/v1/f1/kiosk-a/cmd/refund", "kiosk/v1/f1/kiosk-a/config/desired",
                      "homeassistant/device/kiosk-b/config"):
            with pytest.raises(PublishRefused, match="Not authorized"):
                await a.publish_checked(topic, b"{}")
        # Reading: A subscribes to B's commands (and to everything); B to its own.
        await a.subscribe("kiosk/v1/f1/kiosk-b/cmd/+", qos=1)
        await a.subscribe("kiosk/v1/#", qos=1)
        await b.subscribe("kiosk/v1/f1/kiosk-b/cmd/+", qos=1)
        await console.publish_checked("kiosk/v1/f1/kiosk-b/cmd/ping", b'{"request_id":"1"}')
        await b.publish_checked("kiosk/v1/f1/kiosk-b/events/sale", b'{"secret":1}')
        got_b = await asyncio.wait_for(b.messages.__anext__(), 5)
        assert str(got_b.topic) == "kiosk/v1/f1/kiosk-b/cmd/ping"
        seen_by_a: list[str] = []

        async def drain_a() -> None:
            async for message in a.messages:
                seen_by_a.append(str(message.topic))

        task = asyncio.create_task(drain_a())
        await asyncio.sleep(1.0)
        task.cancel()
        assert not [t for t in seen_by_a if "kiosk-b" in t], seen_by_a
        # The console saw A's own status and B's event, and nothing A tried as B.
        seen: list[str] = []
        while len(console.messages):
            seen.append(str((await console.messages.__anext__()).topic))
        assert "kiosk/v1/f1/kiosk-a/status" in seen and "kiosk/v1/f1/kiosk-b/events/sale" in seen
        assert "kiosk/v1/f1/kiosk-b/status" not in seen


async def test_no_client_certificate_or_a_wrong_ca_is_refused(
    tmp_path: Path, pki: Pki, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = tls_broker(mosquitto_factory, pki, mutual=True)
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
        async with client(broker, pki, None):
            await asyncio.sleep(0.5)
    other = make_pki(tmp_path / "other", "Somebody Else's CA")
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
        async with client(broker, pki, "kiosk-a", ca=other.ca_file):  # the broker is not who it says
            pass


async def test_server_only_tls_verifies_the_broker(
    tmp_path: Path, pki: Pki, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = tls_broker(mosquitto_factory, pki, mutual=False)
    topics = Topics("kiosk/v1", "f1", "k-tls")
    outbox = Outbox(tmp_path / "outbox.sqlite", topics)
    good = FleetLink(MqttConfig(url=tls_url(broker), ca_file=pki.ca_file, will_delay_s=0), topics, outbox,
                     client_id="k-tls", backoff_initial_s=0.2, backoff_max_s=0.5)
    run = asyncio.create_task(good.run())
    try:
        await wait_until(lambda: good.connected, what="a verified TLS connection")
    finally:
        await good.aclose()
        await asyncio.wait_for(run, 5)
    # The name in the URL is not in the certificate (only 127.0.0.1 is): refused.
    wrong_name = FleetLink(
        MqttConfig(url=f"mqtts://localhost:{broker.port}", ca_file=pki.ca_file, will_delay_s=0), topics, outbox,
        client_id="k-tls", backoff_initial_s=0.2, backoff_max_s=0.5,
    )
    run = asyncio.create_task(wrong_name.run())
    try:
        await wait_until(lambda: wrong_name.last_error is not None, what="a refused TLS connection")
        assert not wrong_name.connected
        assert "certificate" in (wrong_name.last_error or "").lower() or "ssl" in (wrong_name.last_error or "").lower()
    finally:
        await wrong_name.aclose()
        await asyncio.wait_for(run, 5)
