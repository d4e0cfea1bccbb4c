"""The c2s stream features (RFC 6120 §4.3.2, §5, §6, §7) per stream state.

c2s keeps the serialized features per :meth:`XMPPStream.features_state`;
these tests make sure a stream never gets another state's features (STARTTLS
offered or required, PLAIN only where allowed, bind after SASL), whatever the
order in which connections of one process ask for them. The SASL exchange and
binding themselves run against a real server in tests/integration/test_c2s.py.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatgate.auth.sasl import Authenticator
from chatgate.config import Settings, XMPPSettings
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.storage.memory import MemoryDirectory
from chatgate.transports.c2s import C2SFactory
from chatgate.transports.stream import BIND_NS, SASL_NS, SESSION_NS, STREAMS_NS, TLS_NS, prepared_jid

HEADER = (b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client'"
          b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


def factory(direct_tls: bool = False, **xmpp: object) -> C2SFactory:
    directory = MemoryDirectory()
    directory.add_domain("example.com")
    domains = DirectoryMirror(directory)
    domains.load()
    clock = Clock()
    settings = Settings(xmpp=XMPPSettings(**xmpp))
    authenticator = Authenticator(directory, domains, 4096, None)
    return C2SFactory(Router(domains, clock=clock), authenticator, settings, None, direct_tls=direct_tls,
                      clock=clock)


def open_stream(f: C2SFactory, localpart: str | None = None):
    """A connection that sent its header: (connection, its <stream:features/>)."""
    connection = f.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
    connection.makeConnection(transport)
    connection.stream.localpart = localpart  # as SASL success leaves it
    connection.dataReceived(HEADER)
    root = ET.fromstring(transport.value() + b"</stream:stream>")
    features = root.find(f"{{{STREAMS_NS}}}features")
    assert features is not None, transport.value()
    return connection, features


def offered(features: ET.Element) -> dict[str, object]:
    starttls = features.find(f"{{{TLS_NS}}}starttls")
    mechanisms = features.find(f"{{{SASL_NS}}}mechanisms")
    return {
        "starttls": None if starttls is None else starttls.find(f"{{{TLS_NS}}}required") is not None,
        "mechanisms": None if mechanisms is None else [m.text for m in mechanisms],
        "bind": features.find(f"{{{BIND_NS}}}bind") is not None,
        "session": features.find(f"{{{SESSION_NS}}}session") is not None,
    }


SCRAM = ["SCRAM-SHA-256", "SCRAM-SHA-1"]


@pytest.mark.parametrize(("direct_tls", "xmpp", "expected"), [
    # TCP, encryption required: STARTTLS (required) and nothing else (§5.3.1)
    (False, {"require_encryption": True},
     {"starttls": True, "mechanisms": None, "bind": False, "session": False}),
    # TCP, encryption optional: STARTTLS offered, SCRAM only (PLAIN needs TLS)
    (False, {"require_encryption": False},
     {"starttls": False, "mechanisms": SCRAM, "bind": False, "session": False}),
    # TCP, PLAIN allowed without TLS
    (False, {"require_encryption": False, "allow_plain_without_tls": True},
     {"starttls": False, "mechanisms": [*SCRAM, "PLAIN"], "bind": False, "session": False}),
    # direct TLS (XEP-0368): no STARTTLS, PLAIN allowed
    (True, {"require_encryption": True},
     {"starttls": None, "mechanisms": [*SCRAM, "PLAIN"], "bind": False, "session": False}),
])
def test_features_before_sasl(direct_tls, xmpp, expected):
    _, features = open_stream(factory(direct_tls, **xmpp))
    assert offered(features) == expected


def test_features_after_sasl_offer_bind_only():
    _, features = open_stream(factory(require_encryption=False), localpart="alice")
    assert offered(features) == {"starttls": None, "mechanisms": None, "bind": True, "session": True}


def test_connections_in_other_states_never_share_features():
    plain, tls = factory(require_encryption=True), factory(direct_tls=True, require_encryption=True)
    relaxed = factory(require_encryption=False)
    for _ in range(2):  # the second round answers from what the first one kept
        assert offered(open_stream(plain)[1])["starttls"] is True
        assert offered(open_stream(plain)[1])["mechanisms"] is None
        assert offered(open_stream(tls)[1])["mechanisms"] == [*SCRAM, "PLAIN"]
        assert offered(open_stream(relaxed)[1])["mechanisms"] == SCRAM
        assert offered(open_stream(relaxed, localpart="bob")[1])["bind"] is True
        assert offered(open_stream(tls)[1])["starttls"] is None


def test_a_stream_after_starttls_is_offered_plain():
    connection, features = open_stream(factory(require_encryption=True))
    assert offered(features)["mechanisms"] is None
    connection.secure = True  # what start_tls() leaves, before the restart
    assert connection.stream.features_state()[1:] == (False, False, (*SCRAM, "PLAIN"))


def test_prepared_jid_equals_a_parsed_one():
    from twisted.words.protocols.jabber.jid import JID

    jid = prepared_jid("alice", "example.com", "Desk Top")
    assert jid == JID("alice@example.com/Desk Top")
    assert hash(jid) == hash(JID("alice@example.com/Desk Top"))
    assert jid.full() == "alice@example.com/Desk Top"
    assert jid.userhost() == "alice@example.com"
