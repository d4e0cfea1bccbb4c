"""What the service's log lines look like: ``[log] format`` (text or json) and ``level``.

twistd starts the log before it makes the service, so the plugin's options
(``twisted/plugins/chatgate_plugin.py``) read ``[log]`` first and hand twistd
the observer :func:`observer` makes (unless ``--logger`` or ``--syslog`` is
given): the same file as ``--logfile`` (twistd's rotation), each event
formatted here (text: twistd's own classic lines), those below the level left
out.

A JSON line is one object: ``time`` (ISO 8601 UTC), ``level``, ``system``
(the logger's namespace), ``event`` (a short stable name where the call
gives one: ``login``, ``login-refused``, ``logout``, ``admin-change``,
``domain-switch``, ``stopping``; README "Logs"), ``message`` (the text line),
then the call's own fields that are plain values (``jid``, ``peer``,
``domain``, ``mechanism``, ``condition``, ...), and ``traceback`` for a
failure. A field whose name says it is a secret is never written, whatever
a call passes (:data:`SECRET_WORDS`).

The level can change live (SIGHUP, :func:`set_level`); the format takes a restart.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, LogLevel, formatEvent, formatEventAsClassicLogText
from twisted.python.logfile import LogFile

#: the key a log call names its event with (``log.info("...", event="login", ...)``)
EVENT = "event"
#: parts of field names that are never written: what a call passes by mistake stays out of the log
SECRET_WORDS = ("password", "secret", "token", "key", "credential", "scram", "payload", "authorization")
#: fields of twisted's own that are not the call's
_OWN = {"format", "message", "isError", "system", "why", "failure", "time", "printed", "debug"}

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
_minimum = LogLevel.info


def set_level(name: str) -> None:
    """Leave out events below *name* (debug, info, warn, error) from now on."""
    global _minimum
    _minimum = _LEVELS[name]


def _shown(event: dict[str, Any]) -> bool:
    level = event.get("log_level")
    return level is None or level >= _minimum


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def json_line(event: dict[str, Any]) -> str | None:
    """One event as a JSON line (None: below the level)."""
    if not _shown(event):
        return None
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time") or 0, UTC).isoformat(timespec="milliseconds"),
        "level": level.name if level is not None else "info",
        "system": event.get("log_namespace") or event.get("log_system") or "-",
    }
    if event.get(EVENT):
        record["event"] = str(event[EVENT])
    try:
        record["message"] = formatEvent(event)
    except Exception:  # a broken format is still one line
        record["message"] = str(event.get("log_format", ""))
    for name, value in event.items():
        lowered = name.lower()
        if (name.startswith("log_") or name in _OWN or name == EVENT or not _plain(value)
                or any(word in lowered for word in SECRET_WORDS)):
            continue
        record[name] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"


def text_line(event: dict[str, Any]) -> str | None:
    """One event as twistd writes it (None: below the level)."""
    return formatEventAsClassicLogText(event) if _shown(event) else None


#: (format, level, logfile) the plugin's options read, for :func:`twistd_observer`
chosen: tuple[str, str, str | None] = ("text", "info", None)


def twistd_observer() -> ILogObserver:
    """What twistd's ``--logger`` names: the observer of the configuration the plugin read."""
    return observer(*chosen)


def observer(log_format: str, level: str, logfile: str | None) -> ILogObserver:
    """The observer twistd starts with: *logfile* ('-' or None: standard output)."""
    set_level(level)
    out: IO[str] = sys.stdout if logfile in (None, "", "-") else LogFile.fromFullPath(logfile)  # type: ignore
    return FileLogObserver(out, json_line if log_format == "json" else text_line)
