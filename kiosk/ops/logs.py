"""Structured logs to journald, with the sale id as a field of its own.

Decision: journald's native protocol (datagrams to /run/systemd/journal/socket) when stderr is
connected to the journal, plain stderr otherwise.

Why native rather than stderr with `<N>` priority prefixes: a prefix carries a priority and
nothing else, so a sale id would be text inside MESSAGE, found only by grepping. The native
protocol carries fields, so `journalctl -u kiosk SALE_ID=K2611...` lists one sale's lines on
every boot, and CODE_FILE/CODE_LINE/LOGGER come along for free. It needs no library (the format
is documented in systemd.io/JOURNAL_NATIVE_PROTOCOL) and works inside the unit's sandbox
(AF_UNIX is allowed; the socket lives in /run, which ProtectSystem=strict leaves reachable).
If a datagram cannot be sent (journald restarting, a message over the socket's size limit), the
record goes to stderr with a `<N>` prefix instead, which journald also understands: a log line
is never lost for the sake of its fields.

Sale ids come from, in order: `extra={"sale_id": ...}`, the current sale set with
`sale_context()`, or an order id found in the message itself (`K` + 12 digits + 12 hex, the
journal's format), so the runner's existing `log.warning("order %s: ...")` lines are tagged too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "kiosk"

# Order ids from Journal.new_order_id(): a prefix of up to 6 letters, yymmddHHMMSS, 12 hex.
ORDER_ID = re.compile(r"\b([A-Z][A-Za-z]{0,5}\d{12}[0-9a-f]{12})")
_FIELD_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")

_current_sale: contextvars.ContextVar[str | None] = contextvars.ContextVar("kiosk_sale_id", default=None)


def syslog_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


@contextlib.contextmanager
def sale_context(sale_id: str | None) -> Iterator[None]:
    token = _current_sale.set(sale_id)
    try:
        yield
    finally:
        _current_sale.reset(token)


def sale_id_of(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "sale_id", None)
    if explicit:
        return str(explicit)
    current = _current_sale.get()
    if current:
        return current
    match = ORDER_ID.search(record.getMessage())
    return match.group(1) if match else None


def encode_fields(fields: dict[str, str]) -> bytes:
    """The journal's native format: KEY=value lines; values with a newline get a length prefix."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournaldHandler(logging.Handler):
    """Sends each record to journald as one datagram with structured fields."""

    MAX_MESSAGE = 48 * 1024  # well under the datagram limit; longer messages are cut

    def __init__(self, socket_path: Path = JOURNAL_SOCKET, identifier: str = IDENTIFIER) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._fallback = StderrPriorityFormatter()

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE] + " [truncated]"
        fields = {
            "MESSAGE": message,
            "PRIORITY": str(syslog_priority(record.levelno)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
        }
        if record.funcName:
            fields["CODE_FUNC"] = record.funcName
        sale_id = sale_id_of(record)
        if sale_id:
            fields["SALE_ID"] = sale_id
        extra = getattr(record, "journal", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                name = str(key).upper()
                if _FIELD_NAME.match(name) and value is not None:
                    fields[name] = str(value)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sock.sendto(encode_fields(self.fields(record)), str(self.socket_path))
        except OSError:
            # journald away or the datagram refused: the line still goes out, on stderr.
            try:
                sys.stderr.write(self._fallback.format(record) + "\n")
                sys.stderr.flush()
            except Exception:
                self.handleError(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


class StderrPriorityFormatter(logging.Formatter):
    """`<N>logger: message [sale K...]`: journald reads the `<N>` as the priority (SyslogLevelPrefix=)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"<{syslog_priority(record.levelno)}>{record.name}: {record.getMessage()}"
        sale_id = sale_id_of(record)
        if sale_id and sale_id not in text:
            text += f" [sale {sale_id}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def stderr_is_journal(environ: dict[str, str] | None = None) -> bool:
    """systemd sets JOURNAL_STREAM=dev:inode of the stream it connected to stdout/stderr."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def use_journald_when_run_by_systemd(socket_path: Path = JOURNAL_SOCKET) -> bool:
    """If stderr goes to the journal, send the root logger's records natively instead; True if so."""
    if not stderr_is_journal() or not socket_path.exists():
        return False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
            sys.stderr,
            sys.__stderr__,
        ):
            root.removeHandler(handler)
    if not any(isinstance(h, JournaldHandler) for h in root.handlers):
        root.addHandler(JournaldHandler(socket_path))
    return True
