"""Provider names in the config -> the module that builds them (imported only when used)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kiosk.payments.base import Provider

if TYPE_CHECKING:
    from kiosk.config import KioskConfig

# name -> module exposing `provider_from_config(config: KioskConfig) -> Provider`
PROVIDER_MODULES: dict[str, str] = {
    "alipay": "kiosk.payments.alipay",
    "wechat_v2": "kiosk.payments.wechat_v2",
    "wechat_v3": "kiosk.payments.wechat_v3",
    "alipay_plus": "kiosk.payments.alipay_plus",
    "citcon": "kiosk.payments.citcon",
}


class UnknownProviderError(ValueError):
    pass


def build_provider(name: str, config: KioskConfig) -> Provider:
    try:
        module_name = PROVIDER_MODULES[name]
    except KeyError:
        raise UnknownProviderError(f"unknown payment provider {name!r}; known: {', '.join(PROVIDER_MODULES)}") from None
    module = importlib.import_module(module_name)
    provider: Provider = module.provider_from_config(config)
    return provider
