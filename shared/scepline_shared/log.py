"""Structured logging: JSON lines (or console) with the transaction id bound.

Call ``configure_logging`` once in ``main()``. Code logs with
``get_logger(__name__).info("event", key=value)``; ``bind_transaction`` puts the
SCEP transactionID on every line logged in the current task, ``bind_endpoint``
the endpoint's name. Secrets never go
in: the ``redact_secrets`` processor drops any key that looks like one, as a
net behind the rule that secrets are not passed to the logger at all.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["bind_endpoint", "bind_transaction", "configure_logging", "get_logger"]

_SECRET_KEYS = ("challenge", "password", "secret", "pin", "token", "private_key")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if any(word in key.lower() for word in _SECRET_KEYS):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # uvicorn/aio-pika/sqlalchemy use stdlib logging; keep them at WARNING unless debugging.
    logging.basicConfig(level=logging.WARNING if level != "DEBUG" else logging.DEBUG)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def bind_transaction(transaction_id: str) -> Any:
    """Bind the SCEP transactionID to every log line of this task."""
    return structlog.contextvars.bound_contextvars(transaction_id=transaction_id)


def bind_endpoint(endpoint: str) -> Any:
    """Bind the SCEP endpoint's name (``endpoint``) to every log line of this task."""
    return structlog.contextvars.bound_contextvars(endpoint=endpoint)
