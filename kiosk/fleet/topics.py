"""MQTT topic names: `<prefix>/<fleet>/<device>/...` for one device, and filters for the fleet side.

    <base>/status            retained: online | offline | lost | maintenance, with a session number
    <base>/birth             retained: versions, hardware, peripherals, boot id, capabilities
    <base>/counters          retained: today's sales and refunds (what the console's table shows)
    <base>/telemetry         health samples, through the outbox
    <base>/events/<kind>     sale, refund, delivery_failed, ... through the outbox
    <base>/alarms/<id>       retained while raised; an empty retained payload clears it
    <base>/cmd/<command>     operator -> device requests
    <base>/reply/<client>/.. device -> operator replies (MQTT 3.1.1 reply topic, and where an
                             MQTT 5 Response Topic must point so the ACL lets the device answer)
    <base>/config/desired    retained, written by operators: versioned desired config
    <base>/config/reported   retained, written by the device: the version it applied

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


def is_topic_level(value: str) -> bool:
    return bool(value) and not _FORBIDDEN_IN_LEVEL.intersection(value)


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
        """Retained lifecycle state (online / offline / lost / maintenance); the Will goes here too."""
        return f"{self.base}/status"

    @property
    def birth(self) -> str:
        return f"{self.base}/birth"

    @property
    def counters(self) -> str:
        return f"{self.base}/counters"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    def event(self, kind: str) -> str:
        """Where events of one kind (sale, refund, ...) are published."""
        _check_level("event kind", kind)
        return f"{self.base}/events/{kind}"

    @property
    def events_filter(self) -> str:
        """Subscription filter matching every event of this device (for tools and tests)."""
        return f"{self.base}/events/+"

    def alarm(self, alarm_id: str) -> str:
        _check_level("alarm id", alarm_id)
        return f"{self.base}/alarms/{alarm_id}"

    @property
    def alarms_filter(self) -> str:
        return f"{self.base}/alarms/+"

    def command(self, name: str) -> str:
        _check_level("command", name)
        return f"{self.base}/cmd/{name}"

    @property
    def commands_filter(self) -> str:
        return f"{self.base}/cmd/+"

    @property
    def reply_prefix(self) -> str:
        """Replies go below this; a Response Topic elsewhere is refused (the ACL would drop it)."""
        return f"{self.base}/reply/"

    def reply(self, requester: str, request_id: str) -> str:
        _check_level("requester", requester)
        _check_level("request id", request_id)
        return f"{self.reply_prefix}{requester}/{request_id}"

    @property
    def desired_config(self) -> str:
        return f"{self.base}/config/desired"

    @property
    def reported_config(self) -> str:
        return f"{self.base}/config/reported"


@dataclass(frozen=True)
class ParsedTopic:
    fleet: str
    device: str
    kind: str  # status, birth, counters, telemetry, events, alarms, cmd, reply, config
    rest: tuple[str, ...]  # e.g. ("sale",) for events/sale


@dataclass(frozen=True)
class FleetTopics:
    """The fleet side: filters over every device (`fleet` may be `+`), and parsing topics back."""

    prefix: str = "kiosk/v1"
    fleet: str = "+"

    def filter(self, kind: str, *rest: str) -> str:
        return "/".join([self.prefix, self.fleet, "+", kind, *rest])

    def parse(self, topic: str) -> ParsedTopic | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        if len(levels) < 3:
            return None
        fleet, device, kind, *rest = levels
        return ParsedTopic(fleet, device, kind, tuple(rest))

    def device(self, fleet: str, device: str) -> Topics:
        return Topics(self.prefix, fleet, device)
