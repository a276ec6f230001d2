"""Credentials out of URLs before they are shown anywhere.

A model's `base_url` may carry proxy credentials (`http://user:pass@proxy:3128/v1`), and the
ledger's Redis URL a password. Whatever celgate logs, prints or exports (log lines, including
the HTTP client's own request lines and tracebacks; span attributes; error messages; the
`celgate models` table) goes through `scrub_text` or `scrub_url` first. The log side is a
formatter installed on the process's handlers, so a third-party library's log line is covered
as well as celgate's own.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

# `scheme://` followed by userinfo (anything up to an `@` before the host part ends).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]+)@")
MASK = "***"


def scrub_text(text: str) -> str:
    """`text` with the user-info part of every URL in it replaced by `***`."""
    if "@" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)


def scrub_url(url: str) -> str:
    """The URL without its user name and password (`http://***@host/...` when it had any)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub_text(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


class ScrubbingFormatter(logging.Formatter):
    """Formats with the wrapped formatter, then removes URL credentials from the whole text
    (message, arguments and traceback alike)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(self._inner.format(record))


def install_log_scrubbing(logger: logging.Logger | None = None) -> None:
    """Wrap the formatter of every handler of `logger` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, ScrubbingFormatter):
            handler.setFormatter(ScrubbingFormatter(handler.formatter))
