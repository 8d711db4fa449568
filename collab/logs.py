"""Logging: JSON lines for machines, readable lines for people, one event per line.

``setup(level, fmt)`` configures the root logger: ``json`` writes one JSON object per line
(``ts``, ``level``, ``logger``, ``msg`` and the event's fields), ``text`` a readable line,
and ``auto`` (the default) picks JSON when stderr is not a terminal (a container, a
service manager) and text when it is.

:func:`event` logs something that happened with its fields: in text the fields follow
the message as ``key=value``; in JSON they are keys of the object. Events never carry
document content, tokens or secrets: only names, sizes, counts, durations and codes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: Fields of a LogRecord that are not an event's own.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}

FORMATS = ("auto", "json", "text")


def event(logger: logging.Logger, level: int, name: str, message: str, **fields: Any) -> None:
    """Log the event ``name`` (``connection.closed``, ``compaction`` ...) with its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"event": name, **fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = _fields(record)
        extra.pop("event", None)
        if extra:
            text += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        return text


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def setup(level: str, fmt: str = "auto") -> None:
    """Configure the root logger (replacing its handlers) for ``collab serve``."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
