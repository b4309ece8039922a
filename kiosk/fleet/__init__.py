"""Fleet reporting: a durable outbox of events and the MQTT link that drains it."""

from kiosk.fleet.link import BrokerAddress, FleetConfigError, FleetLink, PublishRefused, parse_mqtt_url
from kiosk.fleet.outbox import MessageClass, Outbox, OutboxRecord
from kiosk.fleet.topics import Topics

__all__ = [
    "BrokerAddress",
    "FleetConfigError",
    "FleetLink",
    "MessageClass",
    "Outbox",
    "OutboxRecord",
    "PublishRefused",
    "Topics",
    "parse_mqtt_url",
]
