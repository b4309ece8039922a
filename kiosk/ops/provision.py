"""Provisioning bundles: one directory per device, made by the technician, read at first boot.

    kiosk-provision/
      bundle.json        format, device, and the sha256 and kind (secret or not) of every file
      kiosk.toml         the device's config, its file paths pointing into /etc/kiosk/keys/
      keys/<section>/... provider credentials, the broker CA, the device's key and certificate
                         (or its CSR when no certificate has been issued yet), the fleet key

`create_bundle` validates the site template with the daemon's own config model, generates the
device key and CSR (or checks issued certificates), and writes the bundle beside its final place
before renaming it there: on any error nothing is left behind. `install_bundle` is the first-boot
step: it checks the hashes and the config again, installs into <root>/etc/kiosk with strict
modes and owners, then wipes the bundle from the boot partition and leaves a receipt without
secrets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ValidationError

from kiosk import __version__
from kiosk.config import (
    ConfigError,
    DeviceIdentity,
    KioskConfig,
    MqttConfig,
    check_files,
    load_config,
    problems_of,
)
from kiosk.ops.tomlwrite import TomlWriteError, dumps

FORMAT = 1
BUNDLE_DIR_NAME = "kiosk-provision"
MANIFEST = "bundle.json"
CONFIG_NAME = "kiosk.toml"
RECEIPT = "kiosk-provisioned.txt"
FAILED_RECEIPT = "kiosk-provision-FAILED.txt"
DEVICE_ETC = PurePosixPath("/etc/kiosk")
DEVICE_STATE = PurePosixPath("/var/lib/kiosk")
KIOSK_USER = "kiosk"
# Sections whose files travel in the bundle: credentials, certificates, the fleet's key.
BUNDLED_SECTIONS = ("payments", "mqtt", "fleet")


class ProvisionError(Exception):
    """Bad input or a bad bundle; the message says what to fix. Nothing was written."""


@dataclass
class BundleFile:
    key: str  # config key path, e.g. payments.alipay.app_private_key_file
    source: Path
    name: str  # path inside the bundle, e.g. keys/alipay/app_private_key.pem
    secret: bool


@dataclass
class BundleSummary:
    path: Path
    device_id: str
    fleet: str
    mqtt_url: str | None
    files: list[tuple[str, bool]] = field(default_factory=list)  # (name, secret)
    csr: str | None = None
    certificate: str | None = None

    def lines(self) -> list[str]:
        out = [
            f"bundle    {self.path}",
            f"device    {self.fleet}/{self.device_id}",
            f"broker    {self.mqtt_url or 'none (events stay queued)'}",
        ]
        for name, secret in self.files:
            out.append(f"  {'secret' if secret else 'public'}  {name}")
        if self.certificate:
            out.append(f"device certificate: {self.certificate}")
        if self.csr:
            out.append(
                f"certificate signing request: {self.csr} - have the fleet CA sign it, then run kiosk provision "
                "again with --device-key and --device-cert"
            )
        return out


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_secret(key: str, path: Path) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    if "private" in leaf or leaf in ("api_key_file", "apiv3_key_file", "client_key_file", "key_file"):
        return True
    try:  # whatever the key is called, a PEM private key is a secret
        return b"PRIVATE KEY-----" in path.read_bytes()[:4096]
    except OSError:
        return False


def _path_fields(model: BaseModel, prefix: str) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for name, value in model:
        key = f"{prefix}.{name}"
        if isinstance(value, Path):
            out.append((key, value))
        elif isinstance(value, BaseModel):
            out.extend(_path_fields(value, key))
    return out


def bundled_files(config: KioskConfig) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for section in BUNDLED_SECTIONS:
        out.extend(_path_fields(getattr(config, section), section))
    return out


def _set_path(config: KioskConfig, key: str, value: Path) -> KioskConfig:
    """model_copy at a dotted key path (models are frozen)."""
    parts = key.split(".")

    def rebuild(model: BaseModel, rest: list[str]) -> BaseModel:
        if len(rest) == 1:
            return model.model_copy(update={rest[0]: value})
        child = getattr(model, rest[0])
        return model.model_copy(update={rest[0]: rebuild(child, rest[1:])})

    result = rebuild(config, parts)
    assert isinstance(result, KioskConfig)
    return result


def _on_device_state(config: KioskConfig) -> KioskConfig:
    """The device's state lives where the image puts it, whatever the template said."""
    config = _set_path(config, "journal.path", Path(str(DEVICE_STATE / "journal.sqlite")))
    config = _set_path(config, "outbox.path", Path(str(DEVICE_STATE / "outbox.sqlite")))
    if isinstance(getattr(config.display, "dir", None), Path):
        config = _set_path(config, "display.dir", Path(str(DEVICE_STATE / "frames")))
    return config


def _config_toml(config: KioskConfig) -> str:
    # Every value written out (not only those that differ from today's defaults): the device
    # keeps behaving the same when a later version changes a default.
    with warnings.catch_warnings():
        # pydantic warns while serialising the device sections' wrapped unions (display, scanner,
        # gpio) although the values are right; the read-back check in create_bundle proves them.
        warnings.simplefilter("ignore", UserWarning)
        data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return "# Written by kiosk provision; `kiosk config check` validates it.\n" + dumps(data)


# ---------------------------------------------------------------- device key and certificates


def generate_key_and_csr(device_id: str, fleet: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, device_id), x509.NameAttribute(NameOID.ORGANIZATION_NAME, fleet)]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def check_issued_certificate(device_id: str, cert_path: Path, key_path: Path, ca_path: Path | None) -> str:
    """The certificate is for this device, matches its key, and (given the CA) was issued by it."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"--device-cert {cert_path}: not a PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisionError(f"--device-key {key_path}: not an unencrypted PEM private key ({exc})") from None
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ProvisionError(f"--device-cert {cert_path} does not belong to --device-key {key_path}")
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [device_id]:
        raise ProvisionError(f"--device-cert {cert_path}: its CN is {names}, not the device id {device_id!r}")
    now = datetime.now(UTC)
    if cert.not_valid_after_utc < now:
        raise ProvisionError(f"--device-cert {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if ca_path is not None:
        try:
            ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
            cert.verify_directly_issued_by(ca)
        except (OSError, ValueError, TypeError) as exc:
            raise ProvisionError(f"--device-cert {cert_path} was not issued by --ca-cert {ca_path}: {exc}") from None
        except Exception as exc:  # cryptography raises InvalidSignature for a wrong issuer key
            raise ProvisionError(f"--device-cert {cert_path} was not issued by --ca-cert {ca_path}: {exc!r}") from None
    return cert.subject.rfc4514_string()


# ---------------------------------------------------------------- create


def create_bundle(
    template: Path,
    out: Path,
    *,
    device_id: str,
    fleet: str | None = None,
    mqtt_url: str | None = None,
    ca_cert: Path | None = None,
    device_cert: Path | None = None,
    device_key: Path | None = None,
) -> BundleSummary:
    if out.exists():
        raise ProvisionError(f"{out} already exists; choose another --out or remove it")
    if (device_cert is None) != (device_key is None):
        raise ProvisionError("--device-cert and --device-key go together (an issued certificate and its key)")
    try:
        config = load_config(template)
    except ConfigError as exc:
        raise ProvisionError(f"{template}: " + "; ".join(exc.problems)) from None
    fleet_update = {"fleet": fleet} if fleet else {}
    mqtt_updates: dict[str, Any] = {}
    if mqtt_url is not None:
        mqtt_updates["url"] = mqtt_url
    if ca_cert is not None:
        mqtt_updates["ca_file"] = ca_cert
    if device_cert is not None and device_key is not None:
        mqtt_updates.update(cert_file=device_cert, key_file=device_key)
    try:
        # Re-validated: the identity and broker given on the command line obey the same rules.
        device = DeviceIdentity.model_validate({**config.device.model_dump(), "id": device_id, **fleet_update})
        mqtt = MqttConfig.model_validate({**config.mqtt.model_dump(), **mqtt_updates})
    except ValidationError as exc:
        raise ProvisionError("invalid device settings: " + "; ".join(problems_of(exc))) from None
    config = config.model_copy(update={"device": device, "mqtt": mqtt})
    problems = [p for p in check_files(config) if not p.startswith("screens.")]
    if problems:
        raise ProvisionError("; ".join(problems))
    certificate = None
    if device_cert is not None and device_key is not None:
        certificate = check_issued_certificate(config.device.id, device_cert, device_key, config.mqtt.ca_file)
    if config.mqtt.url is not None:
        from kiosk.fleet.link import FleetConfigError, parse_mqtt_url

        try:
            parse_mqtt_url(config.mqtt.url)
        except FleetConfigError as exc:
            raise ProvisionError(str(exc)) from None

    files: list[BundleFile] = []
    used: set[str] = set()
    for key, source in bundled_files(config):
        section = key.split(".")[1] if key.startswith("payments.") else key.split(".")[0]
        name = f"keys/{section}/{source.name}"
        if name in used:
            name = f"keys/{section}/{key.rsplit('.', 1)[-1]}-{source.name}"
        used.add(name)
        files.append(BundleFile(key, source, name, _is_secret(key, source)))
        config = _set_path(config, key, Path(str(DEVICE_ETC / name)))
    config = _on_device_state(config)
    try:
        text = _config_toml(config)
    except TomlWriteError as exc:
        raise ProvisionError(f"the config cannot be written as TOML: {exc}") from None

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(work, 0o700)
        csr_name = None
        secret: dict[str, bool] = {}
        for item in files:
            secret[item.name] = _write(work / item.name, item.source.read_bytes(), item.secret)
        if device_cert is None:
            key_pem, csr_pem = generate_key_and_csr(config.device.id, config.device.fleet)
            secret["keys/device/device.key"] = _write(work / "keys/device/device.key", key_pem, True)
            secret["keys/device/device.csr"] = _write(work / "keys/device/device.csr", csr_pem, False)
            csr_name = "keys/device/device.csr"
        secret[CONFIG_NAME] = _write(work / CONFIG_NAME, text.encode(), False)
        # The bundle as written must load with the daemon's model, to the very same config.
        if _verify_config(work) != config:
            raise ProvisionError("the config written to the bundle does not read back the same (a null in TOML?)")
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "created_by": f"kiosk {__version__}",
            "device": {"id": config.device.id, "fleet": config.device.fleet},
            "files": {name: {"sha256": sha256_file(work / name), "secret": secret[name]} for name in sorted(secret)},
        }
        _write(work / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), False)
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BundleSummary(
        path=out,
        device_id=config.device.id,
        fleet=config.device.fleet,
        mqtt_url=config.mqtt.url,
        files=[(name, secret[name]) for name in sorted(secret)],
        csr=str(out / csr_name) if csr_name else None,
        certificate=certificate,
    )


def _write(path: Path, data: bytes, secret: bool) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return secret


def _verify_config(bundle: Path) -> KioskConfig:
    """Load the bundle's kiosk.toml with the daemon's model; every file it names must be in the bundle."""
    try:
        config = load_config(bundle / CONFIG_NAME)
    except ConfigError as exc:
        raise ProvisionError(f"{bundle / CONFIG_NAME}: " + "; ".join(exc.problems)) from None
    for key, path in bundled_files(config):
        try:
            relative = PurePosixPath(path).relative_to(DEVICE_ETC)
        except ValueError:
            raise ProvisionError(f"{key}: {path} is outside {DEVICE_ETC}") from None
        if not (bundle / relative).is_file():
            raise ProvisionError(f"{key}: {relative} is not in the bundle")
    return config


# ---------------------------------------------------------------- install (first boot)


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def lookup_user(root: Path, user: str) -> Owner:
    """uid and gid from the target root's own /etc/passwd (not this machine's)."""
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            parts = line.split(":")
            if len(parts) >= 4 and parts[0] == user:
                return Owner(int(parts[2]), int(parts[3]))
    except OSError as exc:
        raise ProvisionError(f"cannot read {root / 'etc/passwd'}: {exc}") from None
    raise ProvisionError(f"user {user!r} is not in {root / 'etc/passwd'} (has systemd-sysusers run?)")


@dataclass
class InstallResult:
    device_id: str
    fleet: str
    installed: list[str]
    receipt: Path


def read_manifest(bundle: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProvisionError(f"{bundle / MANIFEST}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ProvisionError(f"{bundle / MANIFEST}: format {manifest.get('format')!r}, this kiosk reads {FORMAT}")
    return manifest


def verify_bundle(bundle: Path) -> tuple[dict[str, Any], KioskConfig]:
    manifest = read_manifest(bundle)
    files: dict[str, Any] = manifest.get("files", {})
    for name, info in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ProvisionError(f"{MANIFEST}: unsafe file name {name!r}")
        path = bundle / relative
        if not path.is_file():
            raise ProvisionError(f"{name} is listed in {MANIFEST} but missing")
        if sha256_file(path) != info.get("sha256"):
            raise ProvisionError(f"{name} does not match its sha256 in {MANIFEST} (damaged copy?)")
    if CONFIG_NAME not in files:
        raise ProvisionError(f"{MANIFEST} lists no {CONFIG_NAME}")
    config = _verify_config(bundle)
    for key, path in bundled_files(config):
        if str(PurePosixPath(path).relative_to(DEVICE_ETC)) not in files:
            raise ProvisionError(f"{key}: {path} is not listed in {MANIFEST}")
    return manifest, config


def _install_file(data: bytes, target: Path, mode: int, owner: Owner | None) -> None:
    """Write beside the target, set mode and owner, fsync, rename: never a half-written key."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _make_dir(path: Path, mode: int, owner: Owner | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wipe(path: Path) -> None:
    """Overwrite, then delete. On flash (SD, FAT) the old blocks may survive in the controller's
    spare area; overwriting still keeps the key out of the filesystem and of undelete tools."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()


def install_bundle(bundle: Path, root: Path, *, user: str = KIOSK_USER, chown: bool = True) -> InstallResult:
    """Install a bundle into <root>/etc/kiosk, then wipe it from where it was (the boot partition).

    Modes: /etc/kiosk and its key folders 0750 root:kiosk; kiosk.toml and public files 0640
    root:kiosk; secrets 0400 owned by kiosk (the daemon refuses keys that others can read).
    """
    manifest, config = verify_bundle(bundle)
    kiosk = lookup_user(root, user)
    root_owner = Owner(0, kiosk.gid)
    owners = (root_owner, kiosk) if chown else (None, None)
    etc = root / DEVICE_ETC.relative_to("/")
    _make_dir(etc, 0o750, owners[0])
    installed: list[str] = []
    names = sorted(manifest["files"], key=lambda n: n == CONFIG_NAME)  # the config last
    for name in names:
        secret = bool(manifest["files"][name].get("secret"))
        target = etc / name
        for parent in reversed(PurePosixPath(name).parents[:-1]):
            _make_dir(etc / parent, 0o750, owners[0])
        _install_file((bundle / name).read_bytes(), target, 0o400 if secret else 0o640, owners[1 if secret else 0])
        installed.append(name)
    for directory in {(etc / n).parent for n in names}:
        _fsync_dir(directory)
    _fsync_dir(etc)

    receipt = bundle.parent / RECEIPT
    now = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [
        f"kiosk provisioned {config.device.fleet}/{config.device.id} at {now}",
        f"bundle created {manifest.get('created_at')} by {manifest.get('created_by')}",
        "installed into /etc/kiosk (the secrets were removed from this partition):",
        *[f"  {n}  sha256 {manifest['files'][n]['sha256'][:16]}..." for n in installed],
    ]
    receipt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in names:
        if manifest["files"][name].get("secret"):
            _wipe(bundle / name)
    shutil.rmtree(bundle)
    _fsync_dir(bundle.parent)
    (bundle.parent / FAILED_RECEIPT).unlink(missing_ok=True)
    return InstallResult(config.device.id, config.device.fleet, installed, receipt)
