"""Event-style logs through structlog, with personal data dropped as a second defence.

Everything else that logs (uvicorn, the libraries, an exception nobody caught) goes
through the standard library's logging, whose handlers carry `PersonalDataFilter`:
NIR-like numbers and API key secrets are masked in messages and tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys that may carry personal data; their values never reach a log line.
PERSONAL_KEYS = frozenset(
    {"nir", "last_name", "first_name", "birth_date", "birth_rank", "beneficiary",
     "member_number", "name", "body", "payload", "secret", "authorization"}
)
REDACTED = "[redacted]"
# a NIR (13 characters and maybe its key; Corsica's 2A/2B) and an API key's secret part
SECRETS_IN_TEXT = re.compile(
    r"\b[12]\d{4}(?:\d{2}|2[ABab])\d{6}(?:\d{2})?\b|(key_[0-9a-f]{16})\.[A-Za-z0-9_-]+")


def scrub(text: str) -> str:
    """The text with NIR-like numbers and key secrets masked."""
    return SECRETS_IN_TEXT.sub(lambda m: f"{m.group(1)}.{REDACTED}" if m.group(1) else REDACTED,
                               text)


class PersonalDataFilter(logging.Filter):
    """Masks personal data in a standard-library record: its message and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = scrub(message), ()
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = scrub(text), None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def scrub_values(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog: the same masking on every string value."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def drop_personal_data(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in PERSONAL_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper(), force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(PersonalDataFilter())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # into the filtered root
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # httpx logs every request URL at INFO; the gateway logs its own events instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_personal_data,
            scrub_values,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        # Resolve stderr at each logger's creation, not once: it may be replaced (tests, daemons).
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
