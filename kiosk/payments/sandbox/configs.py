"""The config section of any provider, pointed at a running sandbox gateway (demo and tests)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kiosk.payments.sandbox.gateway import SandboxGateway


def provider_config(gateway: SandboxGateway, name: str, **overrides: Any) -> BaseModel:
    if name == "alipay":
        return gateway.alipay_config(**overrides)
    if name == "citcon":
        from kiosk.payments.sandbox.citcon import citcon_config

        return citcon_config(gateway, **overrides)
    for protocol in gateway.protocols:
        if protocol.name == name and hasattr(protocol, "config"):
            config: BaseModel = protocol.config(**overrides)
            return config
    raise LookupError(f"the sandbox has no {name} protocol mounted")
