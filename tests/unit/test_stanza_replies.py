"""Replies the server builds from a client's stanza (chatgate/stanza.py)."""

from __future__ import annotations

from chatgate.stanza import error_reply
from chatgate.xml import parse_document, serialize


def test_an_error_reply_keeps_the_stanzas_language():
    """RFC 6120 §8.3.1: the error goes back with the stanza's id and xml:lang, addresses swapped."""
    stanza = parse_document(b"<message xmlns='jabber:client' xml:lang='de' id='m1' from='a@example.com/x'"
                            b" to='b@example.com'/>", 4096)
    reply = parse_document(serialize(error_reply(stanza, "bad-request")).encode(), 4096)
    assert (reply["id"], reply.getAttribute(("http://www.w3.org/XML/1998/namespace", "lang"))) == ("m1", "de")
    assert (reply["to"], reply["from"], reply["type"]) == ("a@example.com/x", "b@example.com", "error")
