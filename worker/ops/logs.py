"""
Logging: JSON lines with a stable `event` name, and one redaction filter on every handler.

Never interpolate a request, a URL with a query string or a lead into a
message; pass ids in `extra`. The filter is the safety net, not the plan: it
masks configured secrets and phone/e-mail shapes in the message and in every
extra field.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from worker.ops.redact import redact_text, redact_value

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


class RedactionFilter(logging.Filter):
    """Masks secrets and personal data in a record before any handler formats it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_text(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                setattr(record, key, redact_value(value, self.secrets))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, event and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                out[key] = value
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Install one stderr handler with the redaction filter on the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactionFilter(secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_leadrelay", False)]:
        root.removeHandler(old)
    handler._leadrelay = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger("leadrelay").setLevel(level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_redaction(handler: logging.Handler, secrets: Iterable[str]) -> None:
    """Put the redaction filter on a handler someone else made (Celery's, a test's)."""
    handler.addFilter(RedactionFilter(secrets))
