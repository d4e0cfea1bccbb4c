"""Restricted XML stream parsing (RFC 6120 §11): chatgate.xml."""

import tracemalloc
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatgate.xml import (
    CLIENT_NS,
    STREAMS_NS,
    XML_NS,
    Element,
    StreamError,
    StreamParser,
    parse_document,
    serialize,
)

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='example.com' version='1.0' xml:lang='en'>"
)
STANZAS = [
    b"<message to='bob@example.com' type='chat' id='m1'><body>Hi &amp; &lt;bye&gt; &#x263A;</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<presence xml:lang='fr'><show>away</show><status>Déjà parti</status></presence>".encode(),
    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
]
STREAM = HEADER + b"\n" + b" \r\n\t".join(STANZAS) + b"  </stream:stream>"


class Recorder:
    """Collects what a StreamParser reports."""

    def __init__(self, max_stanza_size=4096, max_depth=64):
        self.header = None
        self.elements = []
        self.ended = False
        self.parser = StreamParser(
            self.on_start, self.elements.append, self.on_end, max_stanza_size, max_depth
        )

    def on_start(self, header):
        self.header = header

    def on_end(self):
        self.ended = True

    def feed(self, data, step=None):
        step = step or len(data) or 1
        for i in range(0, len(data), step):
            self.parser.feed(data[i : i + step])
        return self


def condition_of(data, step=None, **limits):
    with pytest.raises(StreamError) as caught:
        Recorder(**limits).feed(data, step)
    return caught.value.condition


# -- a normal stream


def test_stream_gives_header_stanzas_and_end():
    recorder = Recorder().feed(STREAM)
    header = recorder.header
    assert (header.uri, header.name, header.defaultUri) == (STREAMS_NS, "stream", "jabber:client")
    assert header["to"] == "example.com" and header["version"] == "1.0"
    assert header.attributes[(XML_NS, "lang")] == "en"
    assert [e.name for e in recorder.elements] == ["message", "iq", "presence", "starttls"]
    assert recorder.ended


def test_every_split_gives_the_same_elements():
    whole = [e.toXml() for e in Recorder().feed(STREAM).elements]
    for step in (1, 2, 3, 7, 64):
        recorder = Recorder().feed(STREAM, step)
        assert [e.toXml() for e in recorder.elements] == whole
        assert recorder.header is not None and recorder.ended


def test_stanzas_are_detached_and_serialise_in_their_namespace():
    message, iq, presence, starttls = Recorder().feed(STREAM).elements
    assert message.parent is None
    assert (message.uri, message.defaultUri) == ("jabber:client", "jabber:client")
    assert message.toXml().startswith("<message xmlns='jabber:client' ")
    assert str(message.body) == "Hi & <bye> \u263a"
    assert message.active.uri == "http://jabber.org/protocol/chatstates"
    assert iq.ping.uri == "urn:xmpp:ping" and iq.ping.parent is iq
    assert presence.attributes[(XML_NS, "lang")] == "fr"
    assert str(presence.status) == "Déjà parti"
    assert (starttls.uri, starttls.defaultUri) == ("urn:ietf:params:xml:ns:xmpp-tls",) * 2


def test_prefixed_elements_and_attributes():
    stanza = (
        b"<message xmlns:e='urn:example' e:mark='1' plain='2'><e:note>x<b>y</b>z</e:note>"
        b"<x xmlns='urn:other'><y/></x></message>"
    )
    (message,) = Recorder().feed(HEADER + stanza).elements
    assert message.attributes == {("urn:example", "mark"): "1", "plain": "2"}
    note, x = message.elements()
    assert (note.uri, note.name, note.defaultUri) == ("urn:example", "note", "jabber:client")
    assert note.children[0] == "x" and note.children[2] == "z"  # text and children stay in order
    assert note.b.uri == "jabber:client"
    assert (x.uri, x.y.uri) == ("urn:other", "urn:other")
    again = parse_document(message.toXml().encode(), 4096)
    assert again.toXml() == message.toXml()


def test_cdata_and_character_references_are_text():
    (message,) = (
        Recorder().feed(HEADER + b"<message><body><![CDATA[<a&b>]]>&#65;&quot;</body></message>").elements
    )
    assert str(message.body) == '<a&b>A"'


# -- restricted XML (§11.1)

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (n, b"&lol%d;" % (n - 1) * 10) for n in range(1, 10))
    + b"]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol9;"
)


def test_billion_laughs_is_refused_at_the_doctype():
    assert len(BILLION_LAUGHS) < 1024
    assert condition_of(BILLION_LAUGHS) == "restricted-xml"
    # Byte by byte: the error comes before a single entity declaration is read,
    # so nothing can ever be expanded.
    recorder = Recorder()
    with pytest.raises(StreamError) as caught:
        for fed in range(len(BILLION_LAUGHS)):
            recorder.parser.feed(BILLION_LAUGHS[fed : fed + 1])
    assert caught.value.condition == "restricted-xml"
    assert fed < BILLION_LAUGHS.index(b"<!ENTITY")


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE stream:stream>" + HEADER[21:],
        b"<?xml version='1.0'?><!DOCTYPE s SYSTEM 'http://example.com/x.dtd'><s/>",
        b"<!DOCTYPE s [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><s>&e;</s>",
        b"<!DOCTYPE s [<!ENTITY % p 'x'>]><s/>",
        b"<!-- hello -->" + HEADER[21:],
        HEADER + b"<!-- between stanzas -->",
        HEADER + b"<message><!-- inside --></message>",
        b"<?xml-stylesheet href='x'?>" + HEADER[21:],
        HEADER + b"<message><?php echo 1; ?></message>",
    ],
)
def test_restricted_xml(data):
    assert condition_of(data) == "restricted-xml"
    assert condition_of(data, step=1) == "restricted-xml"


def test_xml_declaration_must_be_utf8_if_named():
    Recorder().feed(b"<?xml version='1.0' encoding='UTF-8'?>" + HEADER[21:])
    assert condition_of(b"<?xml version='1.0' encoding='ISO-8859-1'?><s/>") == "unsupported-encoding"


@pytest.mark.parametrize(
    "data",
    [
        HEADER + b"<message><body>\xff</body></message>",
        HEADER + b"<message><body>\xc0\xaf</body></message>",  # overlong '/'
        HEADER + b"<message><body>\xed\xa0\x80</body></message>",  # UTF-16 surrogate
        HEADER + b"<message><body>a\x00b</body></message>",
        HEADER + b"<message><body>&#0;</body></message>",
        HEADER + b"<message></iq>",
        HEADER + b"<message><body>&nbsp;</body></message>",  # undefined entity
        HEADER + b"<x:message/>",  # unbound prefix
        HEADER + b"<message a='1' a='2'/>",
        HEADER + b"</stream:stream><message/>",
        HEADER + b"</stream:stream>junk",
        HEADER + b"  <?xml version='1.0'?>",
    ],
)
def test_not_well_formed(data):
    assert condition_of(data) == "not-well-formed"
    assert condition_of(data, step=1) == "not-well-formed"


def test_text_between_stanzas_is_bad_format():
    assert condition_of(HEADER + b"<iq/>hello<iq/>") == "bad-format"


# -- size and depth limits (§13.12)


def wrap_to(size, name=b"message"):
    """A stanza of exactly `size` bytes."""
    head, tail = b"<%s><body>" % name, b"</body></%s>" % name
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("step", [None, 1, 5, 511, 512, 513, 4096])
def test_stanza_size_limit_is_exact(step):
    stanza = wrap_to(512)
    recorder = Recorder(max_stanza_size=512).feed(HEADER + stanza + stanza + b"<iq/>", step)
    assert len(recorder.elements) == 3
    assert condition_of(HEADER + wrap_to(513) + b"<iq/>", step, max_stanza_size=512) == "policy-violation"
    empty = b"<iq a='" + b">" * (512 - 10) + b"'/>"
    assert len(empty) == 512
    assert len(Recorder(max_stanza_size=512).feed(HEADER + empty + empty, step).elements) == 2
    assert condition_of(HEADER + empty[:-3] + b"x'/>", step, max_stanza_size=512) == "policy-violation"


def test_stream_header_counts_against_the_limit():
    header = HEADER[21:]
    Recorder(max_stanza_size=len(header)).feed(HEADER)
    assert condition_of(HEADER, max_stanza_size=len(header) - 1) == "policy-violation"
    endless = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='" + b"a" * 100_000
    assert condition_of(endless, step=4096, max_stanza_size=1000) == "policy-violation"


def test_unterminated_attribute_fails_early_without_growing():
    limit, chunk = 64 * 1024, b"a" * 4096
    recorder = Recorder(max_stanza_size=limit).feed(HEADER + b"<message to='")
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(StreamError) as caught:
            while fed < 10 * 1024 * 1024:
                recorder.parser.feed(chunk)
                fed += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.condition == "policy-violation"
    assert fed <= limit
    assert peak < 4 * limit
    recorder.parser.feed(b"'/>")  # ignored once failed


def test_huge_stanza_in_one_chunk_fails():
    assert condition_of(HEADER + wrap_to(10 * 1024 * 1024), max_stanza_size=65536) == "policy-violation"


@pytest.mark.parametrize("step", [None, 1, 100, 4096])
def test_whitespace_keepalives_never_add_up(step):
    stanza = wrap_to(200)
    data = HEADER + stanza + b" " * 5000 + stanza + b"\r\n\t " * 2000 + stanza + b"\n" * 3000
    recorder = Recorder(max_stanza_size=200).feed(data, step)
    assert len(recorder.elements) == 3
    for _ in range(2000):
        recorder.parser.feed(b" ")
    recorder.parser.feed(stanza)
    assert len(recorder.elements) == 4


def test_the_limit_can_be_raised_after_authentication():
    recorder = Recorder(max_stanza_size=200).feed(HEADER[21:])
    recorder.parser.max_stanza_size = 4096
    recorder.feed(wrap_to(1000))
    assert len(recorder.elements) == 1


def test_depth_limit_counts_the_header():
    Recorder(max_depth=4).feed(HEADER + b"<iq><query xmlns='jabber:iq:roster'><item/></query></iq>")
    deep = HEADER + b"<iq><a><b><c/></b></a></iq>"
    assert condition_of(deep, max_depth=4) == "policy-violation"
    assert condition_of(HEADER + b"<a>" * 100, max_depth=64) == "policy-violation"


# -- parser life cycle


def test_feed_after_an_error_or_close_is_ignored():
    recorder = Recorder()
    with pytest.raises(StreamError):
        recorder.feed(HEADER + b"<a></b>")
    recorder.feed(b"<iq/>")
    recorder = Recorder().feed(HEADER)
    recorder.parser.close()
    recorder.feed(STANZAS[1] + b"\x00 garbage")
    assert recorder.elements == []


def test_closing_from_a_callback_stops_the_chunk():
    seen = []

    def on_element(element):
        seen.append(element.name)
        parser.close()

    parser = StreamParser(lambda header: None, on_element, lambda: None, 4096)
    parser.feed(HEADER + b"<auth/><iq/><<<not xml")
    assert seen == ["auth"]


def test_callback_exceptions_propagate():
    def on_element(element):
        raise RuntimeError("bug")

    parser = StreamParser(lambda header: None, on_element, lambda: None, 4096)
    with pytest.raises(RuntimeError):
        parser.feed(HEADER + b"<iq/>")
    parser.feed(b"<iq/>")  # ignored: the parser closed itself


# -- whole documents (BOSH)

BOSH_BODY = (
    b"<body rid='1249243562' sid='SomeSID' xmlns='http://jabber.org/protocol/httpbind'>"
    b"<message to='contact@example.com' xmlns='jabber:client'><body>Good morning!</body></message>"
    b"<presence xmlns='jabber:client'/></body>"
)


def test_parse_document_gives_the_body_with_its_children():
    body = parse_document(BOSH_BODY, 4096)
    assert (body.uri, body.name, body["rid"]) == ("http://jabber.org/protocol/httpbind", "body", "1249243562")
    message, presence = body.elements()
    assert message.parent is body and presence.parent is body
    assert (message.uri, message.defaultUri) == ("jabber:client", "jabber:client")
    assert str(message.body) == "Good morning!"
    assert parse_document(b"<?xml version='1.0'?>\n<body xmlns='x'/>\n", 100).children == []


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (BOSH_BODY[:-7], "not-well-formed"),
        (b"", "not-well-formed"),
        (BOSH_BODY + b"<body/>", "not-well-formed"),
        (b"<!DOCTYPE body>" + BOSH_BODY, "restricted-xml"),
        (BOSH_BODY.replace(b"<presence", b"<!-- c --><presence"), "restricted-xml"),
        (BOSH_BODY + b" " * 4096, "policy-violation"),
        (BOSH_BODY.replace(b"<presence xmlns='jabber:client'/>", b"<a><b><c/></b></a>"), "policy-violation"),
    ],
)
def test_parse_document_rules(data, condition):
    with pytest.raises(StreamError) as caught:
        parse_document(data, 4096, max_depth=3)
    assert caught.value.condition == condition


# -- nothing but StreamError, whatever arrives

VALID = HEADER + b"".join(STANZAS) + b"</stream:stream>"


@st.composite
def mutated_streams(draw):
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(
            st.binary(min_size=1, max_size=4) | st.sampled_from([b"<", b">", b"&", b"'", b"/", b"]]>"])
        )
        if action == "insert":
            data[at:at] = piece
        elif action == "delete":
            del data[at : at + len(piece)]
        else:
            data[at : at + len(piece)] = piece
    return bytes(data)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=300) | mutated_streams(), step=st.integers(1, 64), limit=st.integers(16, 2048))
def test_only_stream_errors_escape(data, step, limit):
    try:
        Recorder(max_stanza_size=limit, max_depth=8).feed(data, step)
    except StreamError as error:
        assert error.condition
    try:
        parse_document(data, limit)
    except StreamError as error:
        assert error.condition


# -- the one serializer (SECURITY.md, "Output")


def _stream(text: str) -> ET.Element:
    return ET.fromstring("<s xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                         + text + "</s>")


def test_namespace_values_that_are_not_uris_are_refused_at_parse():
    for declaration in ("xmlns=\"urn:a'/>\"", "xmlns:p=\"urn:a'\" p:b='1'", "xmlns='urn:a b'",
                        "xmlns='urn:&lt;x'", "xmlns='urn:&#9;'", "xmlns='urn:{x}'"):
        parser = StreamParser(lambda h: None, lambda s: None, lambda: None, 65536)
        with pytest.raises(StreamError) as caught:
            parser.feed(HEADER + f"<message><x {declaration}/></message>".encode())
        assert caught.value.condition == "bad-format", declaration
    # ordinary namespace names, & in a query included, are fine
    got = []
    parser = StreamParser(lambda h: None, got.append, lambda: None, 65536)
    parser.feed(HEADER + b"<message><x xmlns='http://example.com/ns?a=1&amp;b=2'/><y xmlns='urn:\xc3\xa9'/></message>")
    assert [c.uri for c in got[0].elements()] == ["http://example.com/ns?a=1&b=2", "urn:\u00e9"]


def test_every_value_is_escaped_for_its_quotes():
    message = Element((CLIENT_NS, "message"))
    message["to"] = "bob@example.com'\"<>&\t\n\r"
    child = message.addElement(("urn:a'/></message><message from='boss@othercorp.org/x'>", "x"))
    child[("urn:b\"'", "c")] = "v"
    message.addElement("body", content="</body>]]>&\r")
    for default, prefixes in ((CLIENT_NS, {STREAMS_NS: "stream"}), ("", {})):
        text = serialize(message, default, prefixes)
        (read,) = _stream(text)
        assert read.get("to") == "bob@example.com'\"<>&\t\n\r"
        assert read.get("from") is None
        (x, body) = list(read)
        assert x.tag == "{urn:a'/></message><message from='boss@othercorp.org/x'>}x"
        assert x.get("{urn:b\"'}c") == "v"
        assert body.text == "</body>]]>&\r"


def test_prefixes_a_client_declared_are_never_written():
    got = []
    parser = StreamParser(lambda h: None, got.append, lambda: None, 65536)
    # a decoy binding of the name the writer would give a namespaced attribute
    parser.feed(HEADER + b"<message xmlns:ns0='urn:xmpp:sid:0' xmlns:stream='urn:decoy'>"
                b"<stream:x xmlns:q='urn:q' q:by='bob@example.com' ns0:id='1'/></message>")
    text = serialize(got[0], CLIENT_NS, {STREAMS_NS: "stream"})
    (read,) = _stream(text)
    (x,) = list(read)
    assert x.tag == "{urn:decoy}x"
    assert x.attrib == {"{urn:q}by": "bob@example.com", "{urn:xmpp:sid:0}id": "1"}
    assert "urn:decoy" not in text.split("<x", 1)[0]  # nothing declared on the message itself


def test_elements_in_the_xml_namespace_keep_its_prefix():
    got = []
    parser = StreamParser(lambda h: None, got.append, lambda: None, 65536)
    parser.feed(HEADER + b"<message><xml:x xml:lang='en'/></message>")
    for default in (CLIENT_NS, ""):
        (read,) = _stream(serialize(got[0], default))
        assert [(c.tag, c.attrib) for c in read] == [(f"{{{XML_NS}}}x", {f"{{{XML_NS}}}lang": "en"})]


def test_element_to_xml_is_the_one_serializer():
    message = Element((CLIENT_NS, "message"))
    message.addElement(("urn:a'", "x"))
    assert message.toXml() == serialize(message) == "<message xmlns='jabber:client'><x xmlns='urn:a&apos;'/></message>"
    assert message.toXml(prefixes={STREAMS_NS: "stream"}, defaultUri=CLIENT_NS, prefixesInScope=["stream"]) == \
        "<message><x xmlns='urn:a&apos;'/></message>"
