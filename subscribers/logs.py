"""Logging for `newsletter serve`: uvicorn's access log without the tokens in paths or query strings."""

from __future__ import annotations

import logging
import re
from typing import Any

# /confirm/<token>, /unsubscribe/<token>[/...], /preferences/<token>[/...]: the token is a credential.
TOKEN_PATHS = ("confirm", "unsubscribe", "preferences")
TOKEN_PATH = re.compile(rf"/({'|'.join(TOKEN_PATHS)})/[^/?#\s\"]+")
QUERY = re.compile(r"\?[^\s\"]*")
_TOKEN_PATH_STARTS = tuple(f"/{path}/" for path in TOKEN_PATHS)


def redact(text: str) -> str:
    """`text` with every link token and query string replaced by a placeholder."""
    if "?" not in text and not any(start in text for start in _TOKEN_PATH_STARTS):
        return text  # most of an access log's arguments (an address, a method, a plain path): no regex
    return QUERY.sub("?[redacted]", TOKEN_PATH.sub(r"/\1/[token]", text))


def lighten_records() -> None:
    """What a log record gathers and `serve`'s formats never show: the caller's file and line (a walk up the
    stack), the thread's and the process's names. Measured: uvicorn's access line cost 68 us a request."""
    logging._srcfile = None  # the logging HOWTO's "Optimization" section: no findCaller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class RedactTokens(logging.Filter):
    """Rewrites uvicorn's access log record (its path argument) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging, with RedactTokens on the handlers: every record is redacted once, whichever
    logger it came from."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "subscribers.logs.RedactTokens"}},
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": None,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            },
        },
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["redact"],
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["redact"],
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "subscribers": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "newsletter": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
