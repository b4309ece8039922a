"""MQTT topic names for one device: `<prefix>/<fleet>/<device>/...`.

The fleet and device come from the config, whose patterns already forbid `/`, `+` and `#`; they are
checked again here because a topic level with a wildcard would make the broker reject every publish
(or, in a subscription, match other devices' traffic).
"""

from __future__ import annotations

from dataclasses import dataclass

_FORBIDDEN_IN_LEVEL = frozenset("/+#\x00")


def _check_level(name: str, value: str) -> None:
    if not value or _FORBIDDEN_IN_LEVEL.intersection(value):
        raise ValueError(f"{name} {value!r} cannot be an MQTT topic level (empty, or has / + # or NUL)")


@dataclass(frozen=True)
class Topics:
    prefix: str
    fleet: str
    device: str

    def __post_init__(self) -> None:
        # The prefix may span levels ("kiosk/v1"), but each level must be a plain name.
        for level in self.prefix.split("/"):
            _check_level("topic prefix level", level)
        _check_level("fleet", self.fleet)
        _check_level("device", self.device)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.fleet}/{self.device}"

    @property
    def status(self) -> str:
        """Retained lifecycle state (online / offline / lost); the Will is published here too."""
        return f"{self.base}/status"

    def event(self, kind: str) -> str:
        """Where events of one kind (sale, refund, telemetry, ...) are published."""
        _check_level("event kind", kind)
        return f"{self.base}/events/{kind}"

    @property
    def events_filter(self) -> str:
        """Subscription filter matching every event of this device (for tools and tests)."""
        return f"{self.base}/events/+"
