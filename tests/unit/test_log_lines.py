"""chatgate/logs.py: what a JSON log line holds, what it never holds, and the level."""

from __future__ import annotations

import json

from twisted.logger import LogLevel
from twisted.python.failure import Failure

from chatgate import logs


def event(level: LogLevel = LogLevel.info, **fields) -> dict:
    return {"log_level": level, "log_time": 1_700_000_000.25, "log_namespace": "chatgate.test",
            "log_format": "login {jid}", **fields}


def test_a_line_has_the_event_its_fields_and_never_a_secret():
    line = json.loads(logs.json_line(event(jid="alice@example.com", event="login", password="hunter2",
                                           api_key="k", token="t", sasl_payload="p", peer="127.0.0.1:5",
                                           blob=object())))
    assert line == {"time": "2023-11-14T22:13:20.250+00:00", "level": "info", "system": "chatgate.test",
                    "event": "login", "message": "login alice@example.com", "jid": "alice@example.com",
                    "peer": "127.0.0.1:5"}


def test_a_failure_carries_its_traceback_and_the_level_leaves_out_what_is_below():
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    line = json.loads(logs.json_line(event(LogLevel.critical, log_failure=failure, jid="x")))
    assert "ValueError: boom" in line["traceback"] and line["level"] == "critical"
    logs.set_level("warn")
    try:
        assert logs.json_line(event(LogLevel.info)) is None and logs.text_line(event(LogLevel.info)) is None
        assert logs.json_line(event(LogLevel.warn)) is not None
    finally:
        logs.set_level("info")
