"""chatgate.admin.audit: one structured, one-line event per change."""

from __future__ import annotations

import os
import pwd

from twisted.logger import LogEvent, Logger, formatEvent

from chatgate.admin import audit


def test_a_change_is_one_event_with_stable_fields() -> None:
    seen: list[LogEvent] = []
    audit.record("user.passwd", "alice@example.com", "192.0.2.7", "api", Logger(namespace="chatgate.audit",
                                                                                 observer=seen.append))
    (event,) = seen
    assert (event["audit"], event["operation"], event["target"], event["caller"], event["via"]) == (
        "admin-change", "user.passwd", "alice@example.com", "192.0.2.7", "api")
    assert formatEvent(event) == (
        "admin-change operation=user.passwd target=alice@example.com caller=192.0.2.7 via=api")


def test_a_line_break_in_a_target_cannot_forge_a_second_line() -> None:
    seen: list[LogEvent] = []
    forged = "x.csv\n2026-01-01T00:00:00+0000 [chatgate.audit#info] admin-change operation=user.add"
    audit.record("user.import", forged, "root", "cli", Logger(observer=seen.append))
    assert "\n" not in formatEvent(seen[0]) and "\\n" in formatEvent(seen[0])


def test_targets_are_named_as_stored() -> None:
    assert audit.target("Alice@Example.COM") == "alice@example.com"
    assert audit.target("Mail.Example.COM") == "mail.example.com"
    assert audit.target("not an address@") == "not an address@"  # as given when it does not parse


def test_the_cli_caller_is_the_operating_system_user(monkeypatch) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert audit.os_user() == pwd.getpwuid(os.getuid()).pw_name
