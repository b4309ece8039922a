"""Citcon UPI transport: access tokens, bearer-authenticated JSON calls, the response envelope.

Citcon UPI (reference section 5): `POST /v1/access-tokens` with the merchant's API key as the
Bearer token gives an access token (24 h by default; a 401 means it expired); every other call
carries that token as its Bearer. Each answer is the envelope
`{"status": "success"|"fail", "data": {...}, "app": "citcon-upi", "version": "..."}`.

Citcon signs nothing in its answers: what vouches for them is TLS to Citcon's host (the provider
refuses plain http except to a loopback sandbox) and the token. So an answer is used only when its
envelope is exactly that shape; anything else (an HTML error page, a proxy's JSON, duplicate keys)
raises OutcomeUnknown.

Inferred, because the published UPI pages we have stop short of them: the token request body
`{"token_type": "server"}`, its answer's `data.access_token` and `data.expiry` (Unix seconds, as
Citcon's own SDK demo reads them), and a `fail` envelope's `data.code` / `data.message`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from kiosk.payments.base import OutcomeUnknown

log = logging.getLogger(__name__)

UPI_APP = "citcon-upi"
# Renew this long before the token's stated expiry, so a call never races the expiry.
TOKEN_MARGIN_S = 60.0
# Without a readable expiry, keep the token until Citcon answers 401 (it lasts 24 h by default).
TOKEN_FALLBACK_TTL_S = 23 * 3600.0


class CitconFailure(Exception):
    """A well-formed `status: fail` envelope: Citcon's own answer, with its code and message."""

    def __init__(self, op: str, http_status: int, code: str, message: str) -> None:
        super().__init__(f"{op}: HTTP {http_status} {code}: {message}")
        self.op = op
        self.http_status = http_status
        self.code = code
        self.message = message


class CitconAuthError(OutcomeUnknown):
    """Citcon refused the API key or a fresh access token (401): nothing was carried out."""


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float  # on the monotonic clock


class CitconClient:
    """One merchant's UPI session: caches the access token, renews it once on a 401."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._base = api_url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._clock = clock
        self._wall = wall
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()

    async def call(
        self, op: str, method: str, path: str, *, body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The `data` of a success envelope; raises CitconFailure for a fail envelope, OutcomeUnknown
        (CitconAuthError for a 401 even with a fresh token) for anything else."""
        token = await self._current_token()
        response = await self._send(op, method, path, token.value, body, params)
        if response.status_code == 401:
            # Expired or revoked: a 401 means the request was not carried out, so one retry with a
            # new token is safe even for a charge.
            token = await self._renew(token)
            response = await self._send(op, method, path, token.value, body, params)
            if response.status_code == 401:
                raise CitconAuthError(f"{op}: HTTP 401 even with a new access token")
        data = parse_envelope(op, response)
        log.debug("%s -> %s", op, data.get("status") or "ok")
        return data

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------ tokens

    async def _current_token(self) -> _Token:
        async with self._token_lock:
            if self._token is None or self._clock() >= self._token.renew_at:
                self._token = await self._issue()
            return self._token

    async def _renew(self, stale: _Token) -> _Token:
        async with self._token_lock:
            if self._token is stale or self._token is None:
                # Another call may have renewed it meanwhile; only the stale one is replaced.
                self._token = await self._issue()
            return self._token

    async def _issue(self) -> _Token:
        op = "citcon.access_tokens"
        response = await self._send(op, "POST", "/access-tokens", self._api_key, {"token_type": "server"}, None)
        try:
            data = parse_envelope(op, response)
        except CitconFailure as failure:
            if failure.http_status == 401:
                raise CitconAuthError(f"{op}: Citcon refused the API key ({failure.code})") from None
            raise OutcomeUnknown(str(failure)) from None
        value = data.get("access_token")
        if not isinstance(value, str) or not value or not value.isprintable():
            raise OutcomeUnknown(f"{op}: success without a usable access_token")
        expiry = data.get("expiry")
        lifetime = TOKEN_FALLBACK_TTL_S
        if isinstance(expiry, int) and not isinstance(expiry, bool):
            lifetime = expiry - self._wall()
        log.debug("%s: new access token, valid %.0f s", op, lifetime)
        return _Token(value=value, renew_at=self._clock() + max(0.0, lifetime - TOKEN_MARGIN_S))

    # ------------------------------------------------------------ HTTP

    async def _send(
        self, op: str, method: str, path: str, bearer: str, body: dict[str, Any] | None,
        params: dict[str, str] | None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/json"}
        try:
            return await self._client.request(
                method, self._base + path, json=body, params=params, headers=headers, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            # The exception names the URL at most; the bearer travels only in a header.
            raise OutcomeUnknown(f"{op}: {type(exc).__name__}: {exc}") from None


def parse_envelope(op: str, response: httpx.Response) -> dict[str, Any]:
    """The data of a well-formed UPI envelope (see the module docstring)."""
    status = response.status_code
    if status >= 500 or status < 200 or 300 <= status < 400:
        raise OutcomeUnknown(f"{op}: HTTP {status} from Citcon")
    try:
        body = json.loads(response.content, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError):
        raise OutcomeUnknown(f"{op}: HTTP {status}, the body is not JSON") from None
    if (
        not isinstance(body, dict)
        or body.get("app") != UPI_APP
        or not isinstance(body.get("version"), str)
        or body.get("status") not in ("success", "fail")
        or not isinstance(body.get("data"), dict)
    ):
        raise OutcomeUnknown(f"{op}: HTTP {status}, not a Citcon UPI envelope")
    data: dict[str, Any] = body["data"]
    if body["status"] == "success":
        if status >= 300:
            raise OutcomeUnknown(f"{op}: HTTP {status} with a success envelope")
        return data
    code, message = data.get("code"), data.get("message")
    if not isinstance(code, str) or not code:
        raise OutcomeUnknown(f"{op}: HTTP {status}, a fail envelope without a code")
    raise CitconFailure(op, status, code[:64], str(message or "")[:200])


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would keep the last of two "amount" keys; an answer with two is never genuine.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
