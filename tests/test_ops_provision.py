"""Provisioning: a bundle round trip, bad input that writes nothing, and the first-boot install
into a temporary root (files, modes, owners) that leaves no secret on the boot side. Also the
technician's `kiosk journal` command."""

from __future__ import annotations

import csv
import io
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kiosk.cli import main
from kiosk.config import check_files, load_config
from kiosk.ops.provision import (
    FAILED_RECEIPT,
    RECEIPT,
    ProvisionError,
    create_bundle,
    install_bundle,
    verify_bundle,
)
from kiosk.payments.sandbox.keys import ensure_keys

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def template(tmp_path: Path) -> Path:
    keys = ensure_keys(tmp_path / "site-keys")
    text = (REPO / "config/kiosk.example.toml").read_text()
    text = text.replace("../var/keys/app_private_key.pem", str(keys.app_private_key_file))
    text = text.replace("../var/keys/gateway_public_key.pem", str(keys.gateway_public_key_file))
    path = tmp_path / "site.toml"
    path.write_text(text)
    assert load_config(path)
    return path


def issue(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def fleet_ca(tmp_path: Path) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test fleet CA")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.crt"
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return path, key, ca


def fake_root(tmp_path: Path) -> Path:
    """A target root whose /etc/passwd has the kiosk user (our own uid when not root, so chown works)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    uid, gid = (4242, 4243) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    (root / "etc/passwd").write_text(
        f"root:x:0:0::/root:/bin/sh\nkiosk:x:{uid}:{gid}::/var/lib/kiosk:/usr/sbin/nologin\n"
    )
    return root


def test_round_trip_with_generated_key_and_csr(template: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    summary = create_bundle(template, out, device_id="kiosk-0042", fleet="acme", mqtt_url="mqtt://broker.test:1883")
    manifest, config = verify_bundle(out)
    assert manifest["device"] == {"id": "kiosk-0042", "fleet": "acme"}
    assert config.device.id == "kiosk-0042" and config.mqtt.url == "mqtt://broker.test:1883"
    # The same catalog and payments as the template; only paths and identity changed.
    original = load_config(template)
    assert config.catalog == original.catalog and config.selection == original.selection
    assert config.payments.alipay is not None and original.payments.alipay is not None
    assert config.payments.alipay.app_id == original.payments.alipay.app_id
    assert str(config.payments.alipay.app_private_key_file) == "/etc/kiosk/keys/alipay/app_private_key.pem"
    assert str(config.journal.path) == "/var/lib/kiosk/journal.sqlite"
    source_key = original.payments.alipay.app_private_key_file.read_bytes()
    assert (out / "keys/alipay/app_private_key.pem").read_bytes() == source_key
    csr = x509.load_pem_x509_csr((out / "keys/device/device.csr").read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kiosk-0042"
    key = serialization.load_pem_private_key((out / "keys/device/device.key").read_bytes(), None)
    assert key.public_key().public_numbers() == csr.public_key().public_numbers()  # type: ignore[union-attr]
    assert manifest["files"]["keys/device/device.key"]["secret"] is True
    assert manifest["files"]["keys/alipay/app_private_key.pem"]["secret"] is True
    assert manifest["files"]["keys/alipay/gateway_public_key.pem"]["secret"] is False
    assert stat.S_IMODE((out / "keys/device/device.key").stat().st_mode) == 0o600
    assert summary.csr is not None and "device.csr" in summary.csr


def test_issued_certificates_are_checked_and_used(template: Path, tmp_path: Path, fleet_ca: tuple) -> None:  # type: ignore[type-arg]
    ca_path, ca_key, ca = fleet_ca
    cert_pem, key_pem = issue(ca_key, ca, "kiosk-7")
    (tmp_path / "dev.crt").write_bytes(cert_pem)
    (tmp_path / "dev.key").write_bytes(key_pem)
    (tmp_path / "dev.key").chmod(0o600)
    out = tmp_path / "bundle"
    summary = create_bundle(template, out, device_id="kiosk-7", mqtt_url="mqtts://broker.test:8883",
                            ca_cert=ca_path, device_cert=tmp_path / "dev.crt", device_key=tmp_path / "dev.key")
    _, config = verify_bundle(out)
    assert str(config.mqtt.cert_file) == "/etc/kiosk/keys/mqtt/dev.crt"
    assert str(config.mqtt.key_file) == "/etc/kiosk/keys/mqtt/dev.key"
    assert str(config.mqtt.ca_file) == "/etc/kiosk/keys/mqtt/ca.crt"
    assert summary.csr is None and summary.certificate == "CN=kiosk-7"
    assert not (out / "keys/device").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_id": "bad id!"}, "device settings: id"),
        ({"device_id": "k1", "mqtt_url": "http://broker:80"}, "scheme"),
        ({"device_id": "k1", "device_cert": Path("/nonexistent.crt")}, "go together"),
        ({"device_id": "other-device", "with_cert_for": "kiosk-9"}, "not the device id"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(
    template: Path, tmp_path: Path, fleet_ca: tuple, kwargs: dict, message: str  # type: ignore[type-arg]
) -> None:
    cn = kwargs.pop("with_cert_for", None)
    if cn:
        ca_path, ca_key, ca = fleet_ca
        cert_pem, key_pem = issue(ca_key, ca, cn)
        (tmp_path / "d.crt").write_bytes(cert_pem)
        (tmp_path / "d.key").write_bytes(key_pem)
        (tmp_path / "d.key").chmod(0o600)
        kwargs.update(device_cert=tmp_path / "d.crt", device_key=tmp_path / "d.key", ca_cert=ca_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ProvisionError, match=message):
        create_bundle(template, tmp_path / "bundle", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_bad_template_exit_2_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text('[device]\nid = "x"\n')
    code = main(["provision", "create", "--template", str(bad), "--device-id", "k1", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "catalog" in err and "nothing was written" in err
    assert not (tmp_path / "b").exists()


def test_cli_create_prints_a_summary(template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["provision", "create", "--template", str(template), "--device-id", "k2", "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert code == 0
    assert "device    demo/k2" in out and "secret  keys/alipay/app_private_key.pem" in out


def test_first_boot_install_into_a_temporary_root(template: Path, tmp_path: Path) -> None:
    boot = tmp_path / "boot/firmware"
    boot.mkdir(parents=True)
    bundle = boot / "kiosk-provision"
    create_bundle(template, bundle, device_id="kiosk-0042", mqtt_url="mqtt://broker.test:1883")
    secrets = {n: (bundle / n).read_bytes() for n in ("keys/alipay/app_private_key.pem", "keys/device/device.key")}
    root = fake_root(tmp_path)
    result = install_bundle(bundle, root)

    etc = root / "etc/kiosk"
    uid, gid = (4242, 4243) if os.geteuid() == 0 else (os.getuid(), os.getgid())

    def mode_owner(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    owner_root = 0 if os.geteuid() == 0 else os.getuid()
    assert mode_owner(etc) == (0o750, owner_root, gid)
    assert mode_owner(etc / "kiosk.toml") == (0o640, owner_root, gid)
    assert mode_owner(etc / "keys/alipay") == (0o750, owner_root, gid)
    assert mode_owner(etc / "keys/alipay/app_private_key.pem") == (0o400, uid, gid)
    assert mode_owner(etc / "keys/device/device.key") == (0o400, uid, gid)
    assert mode_owner(etc / "keys/alipay/gateway_public_key.pem") == (0o640, owner_root, gid)
    for name, data in secrets.items():
        assert (etc / name).read_bytes() == data
    assert sorted(result.installed)[-1] == "kiosk.toml"

    # Nothing secret is left on the boot side: the bundle is gone, the receipt holds no key.
    assert not bundle.exists()
    assert sorted(p.name for p in boot.iterdir()) == [RECEIPT]
    receipt = (boot / RECEIPT).read_text()
    assert "kiosk-0042" in receipt and "PRIVATE KEY" not in receipt
    for data in secrets.values():
        body = b"".join(data.splitlines()[1:-1])[:40]
        for path in boot.rglob("*"):
            assert body not in path.read_bytes()

    # The installed config loads with the daemon's model once its paths point into the root.
    config = load_config(etc / "kiosk.toml")
    assert config.device.id == "kiosk-0042"


def test_first_boot_refuses_a_damaged_bundle_and_keeps_it(template: Path, tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    bundle = boot / "kiosk-provision"
    create_bundle(template, bundle, device_id="kiosk-1")
    with (bundle / "kiosk.toml").open("a") as fh:
        fh.write("# edited on the card\n")
    root = fake_root(tmp_path)
    code = main(["provision", "install", "--bundle", str(bundle), "--root", str(root)])
    assert code == 2
    assert "sha256" in (boot / FAILED_RECEIPT).read_text()
    assert bundle.is_dir() and not (root / "etc/kiosk").exists()


def test_first_boot_without_bundle_is_a_no_op(tmp_path: Path) -> None:
    assert main(["provision", "install", "--bundle", str(tmp_path / "none"), "--root", str(tmp_path)]) == 0


def test_a_bundle_for_a_running_kiosk_passes_config_check(template: Path, tmp_path: Path) -> None:
    """Installed into a root and its /etc/kiosk paths mapped there, the files check passes too."""
    bundle = tmp_path / "b"
    create_bundle(template, bundle, device_id="kiosk-3")
    root = fake_root(tmp_path)
    shutil.copytree(bundle, tmp_path / "copy")
    install_bundle(tmp_path / "copy", root)
    text = (root / "etc/kiosk/kiosk.toml").read_text().replace("/etc/kiosk/", f"{root}/etc/kiosk/")
    mapped = tmp_path / "mapped.toml"
    mapped.write_text(text)
    problems = [p for p in check_files(load_config(mapped)) if not p.startswith("screens.")]
    assert problems == []


# ---------------------------------------------------------------- kiosk journal


def make_journal(path: Path) -> list[str]:
    from kiosk.journal import Journal
    from kiosk.sale import Sale, SaleState

    journal = Journal(path)
    ids = []
    for i, state in enumerate((SaleState.DONE, SaleState.REFUNDED, SaleState.AWAITING_PAYMENT)):
        order_id = Journal.new_order_id()
        sale = Sale(state=SaleState.SELECTED, order_id=order_id, slot_id=f"A{i}", amount_minor=250 + i,
                    currency="USD")
        journal.record(sale, "alipay")
        journal.record(Sale(state=state, order_id=order_id, slot_id=f"A{i}", amount_minor=250 + i,
                            currency="USD"), "alipay", {"why": "test"})
        ids.append(order_id)
    journal.close()
    return ids


def test_journal_list_show_export(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite"
    ids = make_journal(db)
    run = [sys.executable, "-m", "kiosk", "journal"]
    listing = subprocess.run([*run, "list", "--db", str(db)], capture_output=True, text=True, check=True).stdout
    assert all(i in listing for i in ids) and "2.50 USD" in listing and "refunded" in listing
    open_only = subprocess.run([*run, "list", "--open", "--db", str(db)], capture_output=True, text=True,
                               check=True).stdout
    assert ids[2] in open_only and ids[0] not in open_only
    show = subprocess.run([*run, "show", ids[1], "--db", str(db)], capture_output=True, text=True, check=True).stdout
    assert "state changes:" in show and "selected" in show and "refunded" in show and "'why': 'test'" in show
    export = subprocess.run([*run, "export", "--csv", "--db", str(db)], capture_output=True, text=True,
                            check=True).stdout
    rows = list(csv.DictReader(io.StringIO(export)))
    assert [r["order_id"] for r in rows] == ids  # oldest first
    assert rows[0]["amount"] == "2.50 USD" and rows[1]["state"] == "refunded"
    missing = subprocess.run([*run, "show", "K000", "--db", str(db)], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "no sale K000" in missing.stderr
    assert subprocess.run([*run, "list", "--db", str(tmp_path / "none.sqlite")], capture_output=True,
                          check=False).returncode == 2
