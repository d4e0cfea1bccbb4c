"""A small BOSH client for tests, written from XEP-0124/0206, over http.client.

``post`` sends any bytes with any method and headers (for the error cases).
:class:`BOSHClient` behaves like a browser client (Strophe): at most
``requests`` requests open at once, an empty poll only when none is open, SASL
PLAIN or SCRAM (with scramp's client side), the stream restart, binding.
Everything it receives is kept in order in ``stanzas``.
"""

from __future__ import annotations

import base64
import http.client
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import scramp

NS = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
CLIENT = "jabber:client"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAMS = "http://etherx.jabber.org/streams"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes
    body: ET.Element | None = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.body = ET.fromstring(self.raw) if self.raw else None
        except ET.ParseError:
            self.body = None

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.body.get(name, default) if self.body is not None else default

    @property
    def terminated(self) -> bool:
        return self.get("type") == "terminate"

    @property
    def condition(self) -> str | None:
        return self.get("condition")

    @property
    def payloads(self) -> list[ET.Element]:
        return list(self.body) if self.body is not None else []

    def stream_error(self) -> str | None:
        """The condition of a <stream:error/> inside, if any."""
        for child in self.payloads:
            if child.tag == f"{{{STREAMS}}}error":
                for condition in child:
                    if not condition.tag.endswith("}text"):
                        return condition.tag.split("}")[1]
        return None


def post(port: int, data: bytes | str, headers: dict[str, str] | None = None, method: str = "POST",
         path: str = "/http-bind", timeout: float = 30) -> Answer:
    """One HTTP request on a fresh connection."""
    if isinstance(data, str):
        data = data.encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sent = {"Content-Type": "text/xml; charset=utf-8"} if method == "POST" else {}
        sent.update(headers or {})
        connection.request(method, path, body=data if method == "POST" else None, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, raw)
    finally:
        connection.close()


def body(payload: str = "", **attributes: Any) -> bytes:
    """A <body/> wrapper; attribute names use _ for : (xmpp_restart)."""
    attrs = " ".join(f"{k.replace('_', ':', 1) if k.startswith('xmpp_') or k.startswith('xml_') else k}='{v}'"
                     for k, v in attributes.items() if v is not None)
    return f"<body xmlns='{NS}' xmlns:xmpp='{XBOSH}' {attrs}>{payload}</body>".encode()


def message(to: str, text: str, mtype: str = "chat") -> str:
    return f"<message xmlns='{CLIENT}' to='{to}' type='{mtype}'><body>{text}</body></message>"


class BOSHClient:
    """One BOSH session, used from a test's thread while its requests run in others."""

    def __init__(self, port: int, domain: str = "example.com", wait: int = 10, hold: int = 1,
                 headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.domain = domain
        self.wait = wait
        self.hold = hold
        self.headers = headers or {}
        self.rid = random.randrange(10**6, 10**9)
        self.sid: str | None = None
        self.requests = 2
        self.jid = ""
        self.stanzas: list[ET.Element] = []
        self.ended: Answer | None = None
        self._cond = threading.Condition()
        self._open = 0
        self._polling = False
        self._poller: threading.Thread | None = None

    # -- requests

    def create(self, **attributes: Any) -> Answer:
        attrs = {"rid": self.rid, "to": self.domain, "wait": self.wait, "hold": self.hold, "ver": "1.11",
                 "xmpp_version": "1.0", "xml_lang": "en"}
        attrs.update(attributes)
        answer = post(self.port, body(**attrs), self.headers)
        if answer.get("sid"):
            self.sid = answer.get("sid")
            self.requests = int(answer.get("requests", "2"))
        return answer

    def request(self, payload: str = "", **attributes: Any) -> Answer:
        """Send one request when the window allows; block until it is answered."""
        with self._cond:
            self._cond.wait_for(lambda: self._open < self.requests or self.ended is not None, 60)
            self.rid += 1
            rid = self.rid
            self._open += 1
        try:
            return self._post(rid, payload, **attributes)
        finally:
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    def _post(self, rid: int, payload: str = "", **attributes: Any) -> Answer:
        answer = post(self.port, body(payload, rid=rid, sid=self.sid, **attributes), self.headers,
                      timeout=self.wait + 30)
        with self._cond:
            self.stanzas.extend(answer.payloads)
            if answer.terminated and self.ended is None:
                self.ended = answer
            self._cond.notify_all()
        return answer

    def send(self, payload: str, **attributes: Any) -> threading.Thread:
        """Send a request in the background (its answer's stanzas land in ``stanzas``)."""
        thread = threading.Thread(target=self.request, args=(payload,), kwargs=attributes, daemon=True)
        thread.start()
        return thread

    def start_polling(self) -> None:
        """Keep a request open, as a browser client does once logged in."""
        self._polling = True
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        self._polling = False
        with self._cond:
            self._cond.notify_all()
        if self._poller is not None:
            self._poller.join(self.wait + 35)

    def _poll(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: not self._polling or self.ended is not None or self._open == 0, 60)
                if not self._polling or self.ended is not None:
                    return
                self.rid += 1
                rid = self.rid
                self._open += 1
            try:
                self._post(rid)
            except OSError:
                return
            finally:
                with self._cond:
                    self._open -= 1
                    self._cond.notify_all()

    def wait_for(self, predicate: Callable[[ET.Element], bool], timeout: float = 15) -> ET.Element:
        """The first received stanza matching *predicate*, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for stanza in self.stanzas:
                    if predicate(stanza):
                        return stanza
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended is not None:
                    got = [ET.tostring(s).decode() for s in self.stanzas]
                    raise AssertionError(f"no such stanza (ended: {self.ended and self.ended.raw}); got {got}")
                self._cond.wait(remaining)

    def wait_ended(self, timeout: float = 15) -> Answer:
        with self._cond:
            self._cond.wait_for(lambda: self.ended is not None, timeout)
        assert self.ended is not None, "the session did not end"
        return self.ended

    # -- XMPP

    def login(self, user: str, password: str, mechanism: str = "PLAIN", resource: str = "web",
              presence: bool = True, poll: bool = True) -> str:
        """Create, authenticate, restart, bind; the full JID. Then keep polling
        (unless not *poll*) and send initial presence (unless not *presence*)."""
        created = self.create()
        assert self.sid, created.raw
        mechanisms = [m.text for m in created.body.iter(f"{{{SASL}}}mechanism")]
        assert mechanism in mechanisms, mechanisms
        if mechanism == "PLAIN":
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            answer = self.request(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        else:
            scram = scramp.ScramClient([mechanism], user, password)
            first = base64.b64encode(scram.get_client_first().encode()).decode()
            answer = self.request(f"<auth xmlns='{SASL}' mechanism='{mechanism}'>{first}</auth>")
            challenge = self._sasl(answer, "challenge")
            scram.set_server_first(base64.b64decode(challenge.text).decode())
            final = base64.b64encode(scram.get_client_final().encode()).decode()
            answer = self.request(f"<response xmlns='{SASL}'>{final}</response>")
            success = self._sasl(answer, "success")
            scram.set_server_final(base64.b64decode(success.text).decode())
        self._sasl(answer, "success")
        restarted = self.request(xmpp_restart="true", to=self.domain)
        assert restarted.body.find(f"{{{STREAMS}}}features/{{{BIND}}}bind") is not None, restarted.raw
        bound = self.request(f"<iq xmlns='{CLIENT}' type='set' id='bind1'><bind xmlns='{BIND}'>"
                             f"<resource>{resource}</resource></bind></iq>")
        self.jid = bound.body.find(f".//{{{BIND}}}jid").text
        if poll:
            self.start_polling()
        if presence:
            self.send(f"<presence xmlns='{CLIENT}'/>")
        return self.jid

    def _sasl(self, answer: Answer, name: str) -> ET.Element:
        found = answer.body.find(f"{{{SASL}}}{name}") if answer.body is not None else None
        assert found is not None, f"expected <{name}/>, got {answer.raw!r}"
        return found

    def terminate(self, payload: str = f"<presence xmlns='{CLIENT}' type='unavailable'/>") -> Answer:
        self._polling = False
        answer = self.request(payload, type="terminate")
        self.stop_polling()
        return answer

    def close(self) -> None:
        """Terminate if still open; for the end of a test."""
        if self.sid and self.ended is None:
            try:
                self.terminate()
            except OSError:
                pass
        self.stop_polling()


def is_message(text: str | None = None, sender: str | None = None) -> Callable[[ET.Element], bool]:
    def match(stanza: ET.Element) -> bool:
        if stanza.tag != f"{{{CLIENT}}}message":
            return False
        if sender is not None and stanza.get("from") != sender:
            return False
        return text is None or stanza.findtext(f"{{{CLIENT}}}body") == text

    return match


def is_presence(sender: str, ptype: str | None = None, show: str | None = None) -> Callable[[ET.Element], bool]:
    def match(stanza: ET.Element) -> bool:
        return (stanza.tag == f"{{{CLIENT}}}presence" and stanza.get("from") == sender
                and stanza.get("type") == ptype
                and (show is None or stanza.findtext(f"{{{CLIENT}}}show") == show))

    return match
