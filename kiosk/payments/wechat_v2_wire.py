"""WeChat Pay API v2's wire format: flat XML bodies and the API-key signature over their fields.

Shared by the provider and the sandbox, so both sides sign and parse the same way; the official
example and wechatpy check it from outside (tests/test_wechat_v2_wire.py).

The sign: every non-empty field except `sign`, keys sorted by code point (ASCII, case-sensitive),
joined as `k=v&...`, then `&key=<API key>`; MD5 or HMAC-SHA256 (keyed with the API key) in upper
hex. The string to sign contains the API key, so it is never logged or put in an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Literal
from xml.parsers import expat

SignType = Literal["MD5", "HMAC-SHA256"]
HMAC_SHA256: SignType = "HMAC-SHA256"
MD5: SignType = "MD5"
SIGN_TYPES: tuple[SignType, ...] = (MD5, HMAC_SHA256)
MAX_XML_BYTES = 64 * 1024  # WeChat's answers are a few hundred bytes; anything huge is not one
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class XmlError(ValueError):
    """A body that is not WeChat's flat <xml><field>text</field>...</xml>."""


def canonical(params: Mapping[str, str]) -> str:
    """WeChat's "stringA": the fields to sign, sorted and joined, before the key is appended."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != "")


def sign(params: Mapping[str, str], api_key: str, sign_type: SignType = HMAC_SHA256) -> str:
    message = "&".join(filter(None, (canonical(params), f"key={api_key}"))).encode()
    if sign_type == HMAC_SHA256:
        return hmac.new(api_key.encode("utf-8"), message, hashlib.sha256).hexdigest().upper()
    if sign_type == MD5:
        return hashlib.md5(message, usedforsecurity=False).hexdigest().upper()
    raise ValueError(f"unknown sign_type {sign_type!r}")


def signed(params: Mapping[str, str], api_key: str, sign_type: SignType = HMAC_SHA256) -> dict[str, str]:
    """params plus their `sign` (sign_type is a signed field itself when it is not the MD5 default)."""
    out = {k: v for k, v in params.items() if k != "sign"}
    if sign_type != MD5:
        out["sign_type"] = sign_type
    out["sign"] = sign(out, api_key, sign_type)
    return out


def verify(params: Mapping[str, str], api_key: str, sign_type: SignType = HMAC_SHA256) -> bool:
    """True when params["sign"] is this API key's sign of the other fields, in this sign_type.

    The caller names the sign_type (the one it asked for) rather than trusting the message's own
    claim, so an answer cannot downgrade itself to MD5."""
    given = params.get("sign", "")
    if not given:
        return False
    return hmac.compare_digest(given.upper().encode("ascii", "replace"), sign(params, api_key, sign_type).encode())


def nonce() -> str:
    """A fresh nonce_str: 32 hex characters, WeChat's maximum length."""
    return secrets.token_hex(16)


# ---------------------------------------------------------------- XML


def to_xml(params: Mapping[str, str]) -> bytes:
    """<xml><k><![CDATA[v]]></k>...</xml>, the form WeChat and its SDKs send."""
    parts = ["<xml>"]
    for key, value in params.items():
        if not _FIELD_NAME.match(key):
            raise XmlError(f"not a field name: {key!r}")
        # "]]>" cannot appear inside one CDATA section: split it across two.
        text = value.replace("]]>", "]]]]><![CDATA[>")
        parts.append(f"<{key}><![CDATA[{text}]]></{key}>")
    parts.append("</xml>")
    return "".join(parts).encode("utf-8")


def from_xml(body: bytes) -> dict[str, str]:
    """The fields of a flat WeChat XML body.

    Parsed with expat directly so that a DOCTYPE or entity declaration (billion laughs, external
    entities) is refused before anything is expanded; nested elements and repeated fields too."""
    if len(body) > MAX_XML_BYTES:
        raise XmlError(f"body is larger than {MAX_XML_BYTES} bytes")
    fields: dict[str, str] = {}
    depth = 0
    current: list[str] = []
    name = ""

    def refuse(*_args: object) -> None:
        raise XmlError("DOCTYPE and entity declarations are not accepted")

    def start(tag: str, _attrs: object) -> None:
        nonlocal depth, name
        depth += 1
        if depth == 1 and tag != "xml":
            raise XmlError(f"root element is <{tag}>, not <xml>")
        if depth > 2:
            raise XmlError(f"nested element <{tag}> in <{name}>")
        if depth == 2:
            if tag in fields:
                raise XmlError(f"field <{tag}> appears twice")
            name = tag
            current.clear()

    def end(_tag: str) -> None:
        nonlocal depth
        if depth == 2:
            fields[name] = "".join(current)
        depth -= 1

    def text(data: str) -> None:
        if depth == 2:
            current.append(data)
        elif data.strip():
            raise XmlError("text outside a field")

    parser = expat.ParserCreate(encoding="utf-8")
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise XmlError(f"not well-formed XML: {exc}") from None
    if not fields and b"<xml" not in body:
        raise XmlError("no <xml> element")
    return fields
