"""The gateway's host functions: its log (also behind Python's ``logging``), counters shared
by every instance, the clock and the running call's properties."""

import logging
from typing import Optional

from wit_world.imports import host, types

Level = host.Level


def log(level: Level, message: str) -> None:
    """A line in the gateway's log tagged with the plugin's name (cut at 4 KiB; past 100
    lines a second the gateway drops lines and says how many)."""
    host.log(level, message)


def counter_add(key: str, delta: int = 1) -> int:
    """Adds ``delta`` to the plugin's counter ``key`` (shared by every instance) and returns
    its new value; past 10,000 keys a new key counts nothing and returns 0."""
    return host.counter_add(key, delta)


def now_unix_nanos() -> int:
    """The wall-clock time, in nanoseconds since the Unix epoch."""
    return host.now_unix_nanos()


def properties() -> Optional[types.CallProperties]:
    """The running call's properties (listener, upstream group and endpoint once known,
    timings, TLS names); None in ``init``."""
    return host.properties()


_LEVELS = ((logging.ERROR, Level.ERROR), (logging.WARNING, Level.WARN),
           (logging.INFO, Level.INFO), (logging.DEBUG, Level.DEBUG))


class GatewayHandler(logging.Handler):
    """A ``logging`` handler writing to the gateway's log; ``export`` installs it on the root
    logger, so ``logging.getLogger(__name__).warning(...)`` works as anywhere else."""

    def emit(self, record: logging.LogRecord) -> None:
        level = next((lv for n, lv in _LEVELS if record.levelno >= n), Level.TRACE)
        try:
            host.log(level, self.format(record))
        except Exception:  # noqa: BLE001 - logging must never fail a hook
            pass


class LogWriter:
    """A file-like object writing whole lines to the gateway's log at ``level``: ``export``
    puts one at ``sys.stdout`` (INFO) and one at ``sys.stderr`` (WARN), so ``print`` works."""

    def __init__(self, level: Level):
        self.level = level
        self._line = ""

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        if len(self._line) > 4096:
            lines.append(self._line)
            self._line = ""
        for line in lines:
            try:
                host.log(self.level, line)
            except Exception:  # noqa: BLE001 - printing must never fail a hook
                pass
        return len(text)

    def flush(self) -> None:
        pass
