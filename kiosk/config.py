"""Configuration: one TOML file plus KIOSK_... environment overrides, validated by pydantic.

Secrets are never inline: the file names paths to key files, and only the loaded key objects
(not their text) travel further. Errors name the key path, e.g. `catalog.slots[2].price`.
"""

from __future__ import annotations

import enum
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from devices import registry
from devices.display_epd import WaveshareOptions
from devices.display_fbdev import FbdevOptions
from devices.display_inky import InkyOptions
from devices.display_luma import Ili9341Options, St7789Options
from devices.display_png import PngOptions
from devices.gpio import GpioOptions
from devices.scanner_evdev import EvdevOptions
from devices.scanner_serial import PtyOptions, SerialOptions
from devices.scanner_stdin import NoneOptions, StdinOptions
from kiosk.money import CURRENCY_EXPONENTS

DEFAULT_CONFIG_PATH = Path("/etc/kiosk/kiosk.toml")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- catalog


class PulseDelivery(Strict):
    mode: Literal["pulse"] = "pulse"
    ms: int = Field(gt=0, le=60_000)


class PulsesDelivery(Strict):
    mode: Literal["pulses"]
    count: int = Field(gt=0, le=100)
    ms: int = Field(gt=0, le=60_000)
    gap_ms: int = Field(default=200, gt=0, le=60_000)


class HoldDelivery(Strict):
    mode: Literal["hold"]
    s: float = Field(gt=0, le=3600)


Delivery = Annotated[PulseDelivery | PulsesDelivery | HoldDelivery, Field(discriminator="mode")]


class DeliveryConfirm(Strict):
    """An input that goes active when the product has left the machine (drop sensor)."""

    pin: int | str
    timeout_s: float = Field(default=5.0, gt=0, le=600)
    active_high: bool = False


class SlotNames(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    en: str = Field(min_length=1, max_length=40)
    zh_hans: str = Field(alias="zh-Hans", min_length=1, max_length=24)


class Slot(Strict):
    id: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    names: SlotNames
    price: int = Field(gt=0, description="price in ISO 4217 minor units (350 = 3.50 USD)")
    currency: str
    relay: int | str = Field(description="GPIO pin of the relay that delivers this slot")
    relay_active_high: bool = True
    delivery: Delivery = PulseDelivery(ms=500)
    confirm: DeliveryConfirm | None = None
    button: int | str | None = Field(default=None, description="GPIO pin of this slot's button")

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCY_EXPONENTS:
            raise ValueError(f"{value!r} is not an ISO 4217 currency this kiosk knows (upper case, e.g. USD)")
        return value


class Catalog(Strict):
    slots: list[Slot] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        seen: set[str] = set()
        for slot in self.slots:
            if slot.id in seen:
                raise ValueError(f"slot id {slot.id!r} appears twice")
            seen.add(slot.id)
        return self

    def slot(self, slot_id: str) -> Slot:
        for slot in self.slots:
            if slot.id == slot_id:
                return slot
        raise KeyError(slot_id)


class SelectionMode(enum.StrEnum):
    SINGLE = "single"  # the kiosk always offers the one product
    BUTTONS = "buttons"  # one GPIO button per slot


class Selection(Strict):
    mode: SelectionMode = SelectionMode.BUTTONS
    cancel_button: int | str | None = None
    button_active_high: bool = False
    bounce_s: float = Field(default=0.05, ge=0, le=2)
    payment_timeout_s: float = Field(default=120, gt=0, le=7200)
    # How long result screens (thank you, refunded, cancelled) stay before the idle screen.
    result_screen_s: float = Field(default=4, ge=0, le=120)
    # After a provider error, how long the out-of-service screen stays before selling again.
    provider_error_pause_s: float = Field(default=10, ge=0, le=600)


# ---------------------------------------------------------------- payments


ProviderName = Literal["alipay", "wechat_v2", "wechat_v3", "alipay_plus", "citcon"]


class AlipayConfig(Strict):
    """Alipay open platform (alipay.trade.*), RSA2."""

    gateway_url: str = "https://openapi.alipay.com/gateway.do"
    app_id: str = Field(min_length=1)
    app_private_key_file: Path
    alipay_public_key_file: Path
    seller_id: str | None = None
    timeout_s: float = Field(default=10, gt=0, le=120)
    poll_interval_s: float = Field(default=2, gt=0, le=30)


class WechatV2Config(Strict):
    """WeChat Pay API v2 (XML, HMAC-SHA256); reverse and refund need the merchant client certificate."""

    api_url: str = "https://apihk.mch.weixin.qq.com"
    appid: str = Field(min_length=1)
    mch_id: str = Field(min_length=1)
    sub_mch_id: str | None = None
    api_key_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    # CA bundle that signs api_url's server certificate (a sandbox's); None: the public CAs.
    ca_file: Path | None = None
    # Required by unifiedorder; the kiosk polls, so this is your back office's URL, if any.
    notify_url: str = "https://localhost/wechat_v2/notify"
    spbill_create_ip: str = "127.0.0.1"  # the terminal's IP, which micropay and unifiedorder report
    timeout_s: float = Field(default=10, gt=0, le=120)
    poll_interval_s: float = Field(default=2, gt=0, le=30)


class WechatV3Config(Strict):
    """WeChat Pay API v3 (JSON, WECHATPAY2-SHA256-RSA2048), cross-border endpoints by default."""

    api_url: str = "https://apihk.mch.weixin.qq.com"
    mchid: str = Field(min_length=1)
    appid: str = Field(min_length=1)
    merchant_serial_no: str = Field(min_length=1)
    merchant_private_key_file: Path
    apiv3_key_file: Path
    # The WeChat Pay public key (PUB_KEY_ID_...) or a platform certificate, and its id/serial.
    wechatpay_public_key_file: Path
    wechatpay_key_id: str = Field(min_length=1)
    cross_border: bool = True
    # WeChat requires a callback URL on every order, but the kiosk polls and never depends on it;
    # the default (.invalid never resolves) lets callbacks fail harmlessly when nobody receives them.
    notify_url: str = Field(default="https://kiosk.invalid/wechatpay/v3/notify", pattern=r"^https?://")
    # Cross-border orders must carry the merchant's MCC (5814: quick-service restaurants).
    merchant_category_code: str = Field(default="5814", pattern=r"^\d{4}$")
    timeout_s: float = Field(default=10, gt=0, le=120)
    poll_interval_s: float = Field(default=2, gt=0, le=30)


class AlipayPlusConfig(Strict):
    """Alipay+ / Antom AMS in-store payments (user-presented and order code), RSA256 Signature header."""

    api_url: str = "https://open-na-global.alipay.com"
    sandbox: bool = False  # /ams/sandbox/api/... instead of /ams/api/...
    client_id: str = Field(min_length=1)
    private_key_file: Path
    alipay_public_key_file: Path
    key_version: int = Field(default=1, ge=1)
    reference_merchant_id: str = Field(min_length=1)
    merchant_mcc: str = Field(default="5814", pattern=r"^\d{4}$")
    merchant_name: str = Field(min_length=1)
    store_id: str = Field(min_length=1)
    store_name: str = Field(min_length=1)
    settlement_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # None: the price's
    notify_url: str | None = None  # paymentNotifyUrl (Antom requires one in production)
    timeout_s: float = Field(default=10, gt=0, le=120)
    poll_interval_s: float = Field(default=3, gt=0, le=30)


class CitconConfig(Strict):
    """Citcon UPI: an API key exchanged for an access token (renewed on 401)."""

    api_url: str = "https://api.citconpay.com/v1"
    api_key_file: Path
    timeout_s: float = Field(default=10, gt=0, le=120)
    poll_interval_s: float = Field(default=2, gt=0, le=30)
    qr_method: str = Field(default="alipay", pattern=r"^[a-z0-9_]{2,32}$")  # QR wallet: alipay, wechatpay, upop


class WalletRoutes(Strict):
    """Which provider charges a payment code the scanner read, per wallet family (none: refuse)."""

    wechat: ProviderName | None = None
    alipay_cn: ProviderName | None = None
    alipay_plus: ProviderName | None = None
    unionpay: ProviderName | None = None


class PaymentsConfig(Strict):
    # The provider whose QR the screen shows (merchant-presented); "none": scanner only.
    provider: ProviderName | None = "alipay"
    routes: WalletRoutes = WalletRoutes()
    alipay: AlipayConfig | None = None
    wechat_v2: WechatV2Config | None = None
    wechat_v3: WechatV3Config | None = None
    alipay_plus: AlipayPlusConfig | None = None
    citcon: CitconConfig | None = None
    subject_prefix: str = "Kiosk"

    @field_validator("provider", mode="before")
    @classmethod
    def _none_means_scanner_only(cls, value: object) -> object:
        return None if value == "none" else value

    def used_providers(self) -> list[str]:
        names = [self.provider] if self.provider else []
        names += [p for p in self.routes.model_dump().values() if p]
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _providers_configured(self) -> PaymentsConfig:
        for name in self.used_providers():
            if getattr(self, name) is None:
                raise ValueError(f"provider {name!r} is used but [payments.{name}] is missing")
        if not self.used_providers():
            raise ValueError("no payment provider: set payments.provider or payments.routes")
        return self


# ---------------------------------------------------------------- devices


# Each device section names its driver with `type`; the rest is validated by that driver's own
# options model, declared next to the driver in devices/ (devices/registry.py lists them). An
# unknown type is reported as `display.type: unknown display 'fbdevv'; known: png, fbdev, ...`.


def _device_section(kind: str, default_type: str) -> PlainValidator:
    return PlainValidator(lambda value: registry.parse_options(kind, value, default_type))


# Unions (not the base classes) so code can narrow by `type`: `if config.scanner.type == "serial"`.
DisplayOptionsUnion = PngOptions | FbdevOptions | St7789Options | Ili9341Options | WaveshareOptions | InkyOptions
ScannerOptionsUnion = NoneOptions | SerialOptions | PtyOptions | EvdevOptions | StdinOptions
DisplayConfig = Annotated[DisplayOptionsUnion, _device_section("display", "png")]
ScannerConfig = Annotated[ScannerOptionsUnion, _device_section("scanner", "none")]
GpioConfig = Annotated[GpioOptions, _device_section("gpio", "gpiozero")]

Wallet = Literal["alipay", "wechat", "alipay_plus", "unionpay"]


class ScreensConfig(Strict):
    font_path: Path = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
    # Screen languages, in order; each needs a table in the shipped strings or in strings_file.
    languages: list[str] = Field(default=["en", "zh-Hans"], min_length=1, max_length=4)
    # More or corrected string tables, same JSON shape as kiosk/screens/strings.json.
    strings_file: Path | None = None
    # Wallet badges on the screens; none: the wallets the payments section can take.
    wallets: list[Wallet] | None = None
    # CNY per one unit of a price currency, e.g. { USD = 7.1 }: prices then show "≈ 17.8 CNY" too.
    cny_rates: dict[str, float] = Field(default_factory=dict)
    # Arm's length: the smallest text, and the smallest QR module phones read at once.
    min_text_mm: float = Field(default=2.5, ge=1, le=20)
    min_module_mm: float = Field(default=0.4, ge=0.2, le=3)

    @field_validator("cny_rates")
    @classmethod
    def _known_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for currency, rate in value.items():
            if currency not in CURRENCY_EXPONENTS:
                raise ValueError(f"{currency!r} is not an ISO 4217 currency this kiosk knows")
            if not rate > 0:
                raise ValueError(f"the rate for {currency} must be greater than 0")
        return value


# ---------------------------------------------------------------- storage and fleet


class JournalConfig(Strict):
    path: Path = Path("/var/lib/kiosk/journal.sqlite")
    # Stop selling while the journal's file system has less free space than this: a sale that
    # cannot be journaled must never start.
    min_free_mb: float = Field(default=50, ge=0)


class RecoveryPolicy(enum.StrEnum):
    REFUND = "refund"
    DELIVER = "deliver"


class RecoveryConfig(Strict):
    # After a crash with a verified payment and an unknown delivery.
    paid_undelivered: RecoveryPolicy = RecoveryPolicy.REFUND


class MqttConfig(Strict):
    url: str | None = Field(default=None, description="mqtt://host:port or mqtts://host:port; none = queue only")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    topic_prefix: str = "kiosk/v1"
    # MQTT 5 Will Delay (and the session expiry that makes it work): a Wi-Fi drop shorter than
    # this reconnects before the broker publishes "lost", so the fleet view does not flap.
    will_delay_s: int = Field(default=10, ge=0, le=3600)
    # TLS (mqtts://): the CA that signed the broker's certificate (default: the system's), and
    # this device's client certificate and key for mutual TLS (its CN is the device id).
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # QoS 1 publishes in flight at once while draining the outbox, and the replay rate cap after
    # an outage (0: no cap) so a fleet coming back at once does not flood the broker.
    max_inflight: int = Field(default=20, ge=1, le=1000)
    replay_rate_per_s: float = Field(default=500, ge=0)
    backoff_max_s: float = Field(default=60, ge=1, le=3600)

    @model_validator(mode="after")
    def _client_cert_pair(self) -> MqttConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together (mutual TLS needs both)")
        return self


class OutboxConfig(Strict):
    path: Path = Path("/var/lib/kiosk/outbox.sqlite")
    # Money records (sales, refunds) are never dropped: at this many waiting, selling stops and
    # an alarm is raised until the broker takes some. Other records drop oldest over their quota.
    money_limit: int = Field(default=50_000, ge=10)
    telemetry_limit: int = Field(default=10_000, ge=1)


class FleetConfig(Strict):
    """What operators may do over MQTT, and what the kiosk reports."""

    # Ed25519 public key (PEM) of the fleet: commands that move money or goods must be signed
    # by its private key. Without it, such commands are refused.
    public_key_file: Path | None = None
    signed_commands: list[str] = ["refund", "test_relay"]
    command_max_age_s: float = Field(default=300, gt=0, le=86400)
    telemetry_interval_s: float = Field(default=60, ge=1, le=86400)
    ha_discovery: bool = False
    ha_discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    # Run after a clean stop when an operator asks for a reboot.
    reboot_command: list[str] = ["systemctl", "reboot"]


class DeviceIdentity(Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    fleet: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


# ---------------------------------------------------------------- the whole file


class KioskConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KIOSK_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    device: DeviceIdentity
    catalog: Catalog
    selection: Selection = Selection()
    payments: PaymentsConfig
    display: DisplayConfig = Field(default_factory=PngOptions)
    scanner: ScannerConfig = Field(default_factory=NoneOptions)
    gpio: GpioConfig = Field(default_factory=GpioOptions)
    screens: ScreensConfig = ScreensConfig()
    journal: JournalConfig = JournalConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    fleet: FleetConfig = FleetConfig()

    @model_validator(mode="after")
    def _selection_matches_catalog(self) -> KioskConfig:
        if self.selection.mode is SelectionMode.SINGLE and len(self.catalog.slots) != 1:
            raise ValueError("selection.mode = 'single' needs exactly one slot in catalog.slots")
        if self.selection.mode is SelectionMode.BUTTONS:
            missing = [s.id for s in self.catalog.slots if s.button is None]
            if missing:
                raise ValueError(f"selection.mode = 'buttons' needs a button for slots {missing}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _toml_path_for_load.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


# pydantic-settings reads the TOML path from the class; a module-level slot keeps load() re-entrant
# enough for a single-threaded CLI and tests without subclassing per call.
_toml_path_for_load: dict[str, Path | None] = {"path": None}


class ConfigError(Exception):
    """Every problem in a config file, each as `key.path: message`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"pulse", "pulses", "hold"} or part.startswith("function-"):
            # discriminated-union tags are not keys in the file
            continue
        else:
            out += ("." if out else "") + part
    return out or "(file)"


def _friendly(message: str) -> str:
    message = message.removeprefix("Value error, ").replace("Input should be", "must be")
    return message[0].lower() + message[1:] if message else message


def problems_of(error: ValidationError) -> list[str]:
    return [f"{_key_path(tuple(e['loc']))}: {_friendly(e['msg'])}" for e in error.errors()]


def load_config(path: Path, **overrides: Any) -> KioskConfig:
    """Load and validate; raise ConfigError listing every problem with its key path."""
    if not path.is_file():
        raise ConfigError(str(path), [f"(file): config file {path} does not exist"])
    try:
        with path.open("rb") as fh:
            tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"(file): not valid TOML: {exc}"]) from None
    _toml_path_for_load["path"] = path
    try:
        config = KioskConfig(**overrides)
    except ValidationError as exc:
        raise ConfigError(str(path), problems_of(exc)) from None
    finally:
        _toml_path_for_load["path"] = None
    return _resolve_relative_paths(config, path.parent)


def _resolve_relative_paths(config: KioskConfig, base: Path) -> KioskConfig:
    """Relative paths in a config file are relative to the file, so a checkout runs anywhere."""

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    def fix_all(section: BaseModel) -> Any:
        return section.model_copy(update={k: fix(v) for k, v in section if isinstance(v, Path)})

    updates: dict[str, Any] = {
        "display": fix_all(config.display),
        "scanner": fix_all(config.scanner),
        "journal": config.journal.model_copy(update={"path": fix(config.journal.path)}),
        "outbox": config.outbox.model_copy(update={"path": fix(config.outbox.path)}),
        "screens": fix_all(config.screens),
        "mqtt": config.mqtt.model_copy(update={k: fix(v) for k, v in config.mqtt if isinstance(v, Path)}),
        "fleet": config.fleet.model_copy(update={k: fix(v) for k, v in config.fleet if isinstance(v, Path)}),
    }
    sections: dict[str, Any] = {}
    for name, section in _payment_sections(config):
        paths = {k: fix(v) for k, v in section if isinstance(v, Path)}
        sections[name] = section.model_copy(update=paths)
    updates["payments"] = config.payments.model_copy(update=sections)
    return config.model_copy(update=updates)


def _payment_sections(config: KioskConfig) -> list[tuple[str, BaseModel]]:
    payments = config.payments
    names = ("alipay", "wechat_v2", "wechat_v3", "alipay_plus", "citcon")
    return [(n, getattr(payments, n)) for n in names if getattr(payments, n) is not None]


def _is_secret(key: str) -> bool:
    """Private keys, API keys and client keys; public keys and certificates may be world-readable."""
    return ("private" in key or key in ("api_key_file", "apiv3_key_file", "client_key_file"))


def check_files(config: KioskConfig) -> list[str]:
    """Problems a valid schema can still have: files that must exist to start."""
    problems: list[str] = []
    for name, section in _payment_sections(config):
        for key, value in section:
            if not isinstance(value, Path):
                continue
            if not value.is_file():
                problems.append(f"payments.{name}.{key}: file {value} does not exist")
            elif _is_secret(key) and os.name == "posix" and value.stat().st_mode & 0o077:
                problems.append(f"payments.{name}.{key}: {value} is readable by others; chmod 600 it")
    problems += _fleet_file_problems(config)
    if not config.screens.font_path.is_file():
        problems.append(
            f"screens.font_path: font {config.screens.font_path} not found "
            "(install fonts-wqy-microhei or fonts-noto-cjk, or point to a CJK font)"
        )
    problems += _screen_language_problems(config.screens)
    return problems


def _screen_language_problems(screens: ScreensConfig) -> list[str]:
    from kiosk.screens.strings import StringsError, load_tables, merged_tables

    try:
        tables = merged_tables(load_tables(), load_tables(screens.strings_file) if screens.strings_file else None)
    except (OSError, StringsError) as exc:
        return [f"screens.strings_file: {exc}"]
    return [
        f"screens.languages: no string table for {lang!r} (have {', '.join(sorted(tables))}; add one in strings_file)"
        for lang in screens.languages
        if lang not in tables
    ]


def _fleet_file_problems(config: KioskConfig) -> list[str]:
    problems: list[str] = []
    files = [(f"mqtt.{k}", v) for k, v in config.mqtt if isinstance(v, Path)]
    files += [(f"fleet.{k}", v) for k, v in config.fleet if isinstance(v, Path)]
    for key, value in files:
        if not value.is_file():
            problems.append(f"{key}: file {value} does not exist")
        elif key == "mqtt.key_file" and os.name == "posix" and value.stat().st_mode & 0o077:
            problems.append(f"{key}: {value} is readable by others; chmod 600 it")
    return problems
