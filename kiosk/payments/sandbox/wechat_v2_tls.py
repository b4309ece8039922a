"""The WeChat Pay v2 sandbox's secrets and its HTTPS listener.

WeChat serves /secapi/ (reverse, refund) only to a client presenting the merchant's certificate.
The sandbox does the same for real: a test CA signs a server certificate and the merchant's client
certificate (CN = mch_id), and a second listener speaks TLS, asks every client for a certificate
and verifies any it gets against that CA. Paths that need one are refused without one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiosk.payments.sandbox.wire import WireRequest, WireResponse

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
# (request, CN of the verified client certificate or None) -> answer
Handle = Callable[[WireRequest, str | None], WireResponse]


@dataclass(frozen=True)
class WechatV2Files:
    api_key_file: Path  # the merchant API key both sides sign with: payments.wechat_v2.api_key_file
    ca_file: Path  # signs both certificates below: payments.wechat_v2.ca_file
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path  # WeChat calls it apiclient_cert.pem: payments.wechat_v2.client_cert_file
    client_key_file: Path  # apiclient_key.pem: payments.wechat_v2.client_key_file


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey, usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kiosk sandbox (WeChat Pay v2)")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.IPAddress(ipaddress.ip_address("::1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def ensure_files(keys_dir: Path, mch_id: str, prefix: str = "wechat_v2_") -> WechatV2Files:
    """Create whatever is missing in keys_dir: an API key, a CA, a server and a client certificate
    (private files mode 0600). A new CA reissues both certificates; existing files are kept."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    files = WechatV2Files(*(keys_dir / f"{prefix}{n}" for n in (
        "api_key.txt", "ca.pem", "server_cert.pem", "server_key.pem", "apiclient_cert.pem", "apiclient_key.pem",
    )))
    if not files.api_key_file.exists():
        _write_private(files.api_key_file, (secrets.token_hex(16) + "\n").encode())  # 32 chars, like WeChat's
    ca_key_file = keys_dir / f"{prefix}ca_key.pem"
    fresh_ca = not (files.ca_file.exists() and ca_key_file.exists())
    if fresh_ca:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _issue("kiosk sandbox WeChat Pay v2 test CA", ca_key, None, ca_key, None)
        _write_private(ca_key_file, _key_pem(ca_key))
        files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    else:
        loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey), "the sandbox CA key is an EC key"
        ca_key, ca = loaded, x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    for cert_file, key_file, subject, usage in (
        (files.server_cert_file, files.server_key_file, "localhost", ExtendedKeyUsageOID.SERVER_AUTH),
        (files.client_cert_file, files.client_key_file, mch_id, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        if fresh_ca or not (cert_file.exists() and key_file.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            _write_private(key_file, _key_pem(key))
            cert_file.write_bytes(_issue(subject, key, ca, ca_key, usage).public_bytes(serialization.Encoding.PEM))
    return files


def client_cn(peer: Any) -> str | None:
    """The commonName of a verified peer certificate (ssl.getpeercert() form), if any."""
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    disable_nagle_algorithm = True
    server: _TlsServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox wechat_v2 tls %s " + format, self.client_address[0], *args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self.send_error(413)
            return
        body = self.rfile.read(length)
        path, _, query = self.path.partition("?")
        request = WireRequest(self.command, path, query, dict(self.headers.items()), body)
        assert isinstance(self.request, ssl.SSLSocket)
        response = self.server.handle(request, client_cn(self.request.getpeercert()))
        if response.delay_s:
            self.server.stopping.wait(response.delay_s)
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, context: ssl.SSLContext, handle: Handle, stopping: threading.Event) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.context, self.handle, self.stopping = context, handle, stopping
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        # The handshake runs in the request's own thread (finish_request), not in the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        try:
            request.settimeout(10)
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.info("sandbox wechat_v2: TLS handshake from %s failed: %s", client_address[0], exc)
            return
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class TlsListener:
    """The HTTPS side, started on first use and stopped when the gateway stops (its `stopping`
    event is set): WireProtocol has no lifecycle of its own to hook."""

    def __init__(self, files: WechatV2Files, handle: Handle, stopping: threading.Event) -> None:
        self._files, self._handle, self._stopping = files, handle, stopping
        self._lock = threading.Lock()
        self._server: _TlsServer | None = None

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._files.server_cert_file, self._files.server_key_file)
        context.load_verify_locations(self._files.ca_file)
        # OPTIONAL: every client is asked for a certificate and any it sends must chain to the CA;
        # /pay/ works without one (as at WeChat), /secapi/ is refused without one.
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def url(self, host: str) -> str:
        with self._lock:
            if self._server is None:
                server = _TlsServer(host, self._context(), self._handle, self._stopping)
                threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                 name="wechat-v2-sandbox-tls", daemon=True).start()
                threading.Thread(target=self._stop_with_gateway, args=(server,),
                                 name="wechat-v2-sandbox-tls-stop", daemon=True).start()
                self._server = server
            address = self._server.server_address
        bound = str(address[0])
        return f"https://[{bound}]:{address[1]}" if ":" in bound else f"https://{bound}:{address[1]}"

    def _stop_with_gateway(self, server: _TlsServer) -> None:
        self._stopping.wait()
        with self._lock:
            if self._server is server:
                self._server = None
        server.shutdown()
        server.close_connections()
        server.server_close()
