"""The message broker: one contract (``base``), an in-process implementation for
embedded mode (``memory``) and RabbitMQ for production (``rabbitmq``).

``create_broker(url)`` picks one; services only ever see ``Broker``.
"""

from .base import (
    Broker,
    BrokerConfigError,
    BrokerUnavailable,
    Consumer,
    Delivery,
    DeliveryAlreadySettled,
    create_broker,
)
from .memory import MemoryBroker

__all__ = [
    "Broker",
    "BrokerConfigError",
    "BrokerUnavailable",
    "Consumer",
    "Delivery",
    "DeliveryAlreadySettled",
    "MemoryBroker",
    "create_broker",
]
