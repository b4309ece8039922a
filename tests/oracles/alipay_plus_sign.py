"""Oracle: the official Antom SDK (global-open-sdk-python) signs, verifies and builds strings to sign.

Runs under .venv-oracles/alipay_plus/bin/python (the SDK pins cryptography 44, which the kiosk's
venv does not have), never imported by the tests. Reads one JSON request, or a list of them, on
stdin and prints the answers as JSON in the same shape:

  {"op": "sign_content", "method", "path", "client_id", "time", "body"}   -> {"content": str}
  {"op": "sign", ..., "private_key": PKCS#1 PEM or its base64 body}         -> {"signature": str (URL-encoded)}
  {"op": "verify", ..., "signature": URL-encoded, "public_key": SPKI PEM}   -> {"valid": bool}
  {"op": "check_header", ..., "header": Signature header, "public_key"}    -> {"valid": bool}  (webhook_tool)
"""

from __future__ import annotations

import json
import sys
from typing import Any

from com.alipay.ams.api.tools import signature_tool, webhook_tool


def answer(req: dict[str, Any]) -> dict[str, Any]:
    args = (req["method"], req["path"], req["client_id"], req["time"], req["body"])
    op = req["op"]
    if op == "sign_content":
        return {"content": signature_tool.gen_sign_content(*args)}
    if op == "sign":
        return {"signature": signature_tool.sign(*args, req["private_key"])}
    if op == "verify":
        try:
            return {"valid": bool(signature_tool.verify(*args, req["signature"], req["public_key"]))}
        except Exception as exc:  # the SDK raises (rsa.VerificationError) rather than returning False
            return {"valid": False, "error": type(exc).__name__}
    if op == "check_header":
        try:
            return {"valid": bool(webhook_tool.check_signature(*args, req["header"], req["public_key"]))}
        except Exception as exc:
            return {"valid": False, "error": type(exc).__name__}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    data = json.load(sys.stdin)
    out = [answer(r) for r in data] if isinstance(data, list) else answer(data)
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
