"""Shared fixtures. Each section belongs to one area; add new sections below."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# tests/ has no __init__.py, so pytest puts it on sys.path and the helper imports as `broker`.
from broker import Mosquitto, MosquittoMissing

from kiosk.payments.sandbox import SandboxGateway

# ---------------------------------------------------------------- mosquitto (fleet tests)

MosquittoFactory = Callable[..., Mosquitto]


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoFactory]:
    """Make brokers that are NOT started yet: `make(port=None, extra_config="")`; all stopped at the end.

    A missing mosquitto fails the test, never skips it: a skipped fleet test would hide that the
    delivery of sale records went untested.
    """
    brokers: list[Mosquitto] = []

    def make(port: int | None = None, extra_config: str = "") -> Mosquitto:
        try:
            broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), port=port, extra_config=extra_config)
        except MosquittoMissing as exc:
            pytest.fail(str(exc), pytrace=False)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """A running broker on a free 127.0.0.1 port: `.host`, `.port`, `.url`, `.stop()`, `.start()`."""
    broker = mosquitto_factory()
    broker.start()
    return broker


# ---------------------------------------------------------------- power cuts (issue: money safety)


@pytest.fixture(scope="session")
def powerloss_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LD_PRELOAD library that keeps only fsynced data (tests/powerloss/shim.c), built once."""
    from tests.powerloss import ShimBuildError, build_shim

    try:
        return build_shim(tmp_path_factory.mktemp("powerloss"))
    except ShimBuildError as exc:
        pytest.fail(str(exc), pytrace=False)


# ---------------------------------------------------------------- the sandbox gateway


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One set of sandbox keys for the session: generating RSA keys for every protocol is slow."""
    return tmp_path_factory.mktemp("sandbox-keys") / "keys"


@pytest.fixture(scope="module")
def running_gateway(keys_dir: Path) -> Iterator[SandboxGateway]:
    """One sandbox gateway per test module, on a free loopback port."""
    with SandboxGateway(keys_dir=keys_dir) as gateway:
        yield gateway


@pytest.fixture
def gateway(running_gateway: SandboxGateway) -> SandboxGateway:
    running_gateway.reset()  # no orders, faults or queued tourists left from the test before
    return running_gateway
