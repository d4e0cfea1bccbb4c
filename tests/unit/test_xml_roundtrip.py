"""What chatgate writes parses back to exactly the stanza that was meant.

Two properties over generated stanzas, each checked by a parser chatgate does
not own (the standard library's ElementTree) reading the written text inside
a stream header, as a client would:

- the writer alone: any tree — namespace names and attribute values holding
  quotes, ``<``, ``&``, ``>``, whitespace and any other XML character,
  namespaced attributes, the XML namespace — is written by
  ``chatgate.xml.serialize`` so that it reads back as one element equal to the
  tree, in the c2s form (jabber:client default, ``stream`` prefix bound), the
  BOSH form and the plain (archive) form;
- parser and writer: the same trees as a hostile client would send them (either
  quote, character and entity references, CDATA, prefixes of its own choosing
  and decoy declarations such as ``xmlns:ns0``, ``xmlns:stream``, prefixes
  bound on an ancestor) go through ``StreamParser``: a stanza is either refused
  with ``bad-format`` because a namespace name is not a URI, or parsed to the
  tree that was meant and written back to it.

CI runs a quick pass; ``CHATGATE_XML_EXAMPLES=100000`` runs the long one
(figures in bench/RESULTS.md, "Output round trip").
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatgate.xml import CLIENT_NS, STREAMS_NS, XML_NS, Element, StreamError, StreamParser, serialize

EXAMPLES = int(os.environ.get("CHATGATE_XML_EXAMPLES", "400"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BOSH_NS = "http://jabber.org/protocol/httpbind"
#: the forms a stanza is written in: (default namespace, prefixes bound around it)
FORMS = {
    "c2s": (CLIENT_NS, {STREAMS_NS: "stream"}),
    "bosh": (BOSH_NS, {STREAMS_NS: "stream"}),
    "plain": ("", {}),
}
NOT_URI = re.compile(r"[\x00-\x20\x7f\"'<>\\^`{|}]")


@dataclass
class Tree:
    """The stanza that is meant: names, attributes and children, no syntax."""

    uri: str
    name: str
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    children: list[Tree | str] = field(default_factory=list)

    def canonical(self) -> tuple:
        return canonical(self.uri, self.name, self.attributes, self.children)


def canonical(uri: str, name: str, attributes: dict[tuple[str, str], str], children: list) -> tuple:
    merged: list = []
    for child in children:
        if isinstance(child, str):
            if not child:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += child
                continue
        merged.append(child)
    return (uri, name, tuple(sorted(attributes.items())),
            tuple(c if isinstance(c, str) else c.canonical() if isinstance(c, Tree) else c for c in merged))


def from_domish(element) -> tuple:
    attributes = {(k if isinstance(k, tuple) else ("", k)): v for k, v in element.attributes.items()}
    children = [c if isinstance(c, str) else from_domish(c) for c in element.children]
    return canonical(element.uri or "", element.name, attributes, children)


def _split(name: str) -> tuple[str, str]:
    return tuple(name[1:].split("}", 1)) if name.startswith("{") else ("", name)  # type: ignore[return-value]


def from_etree(element: ET.Element) -> tuple:
    children: list = [element.text or ""]
    for child in element:
        children += [from_etree(child), child.tail or ""]
    return canonical(*_split(element.tag), {_split(k): v for k, v in element.attrib.items()}, children)


def to_domish(tree: Tree) -> Element:
    element = Element((tree.uri, tree.name))
    for (uri, local), value in tree.attributes.items():
        element[(uri, local) if uri else local] = value
    for child in tree.children:
        element.addChild(child if isinstance(child, str) else to_domish(child))
    return element


def read_back(text: str, default: str, prefixes: dict[str, str]) -> list[ET.Element]:
    """*text* as a client reads it: inside a stream that binds the form's namespaces."""
    declarations = f' xmlns="{default}"' if default else ""
    declarations += "".join(f' xmlns:{p}="{u}"' for u, p in prefixes.items())
    return list(ET.fromstring(f"<wrapper{declarations}>{text}</wrapper>"))


# -- strategies

_CHAR = st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(
    lambda c: c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c >= "\U00010000")
MARKUP = ["'", '"', "<", ">", "&", "/>", "</message>", "<message from='boss@othercorp.org/x'>", "]]>", "&amp;",
          "\r", "\n", "\t", " ", "xmlns='x'"]
hostile_text = st.lists(st.one_of(st.sampled_from(MARKUP), st.text(_CHAR, max_size=8)), max_size=6).map("".join)
URIS = ["jabber:client", "urn:xmpp:sid:0", "http://jabber.org/protocol/address", "urn:example:x", "urn:a",
        "http://example.com/ns?a=1&b=2", "urn:é:ü", STREAMS_NS, XML_NS, "vcard-temp", ""]
good_uri = st.sampled_from(URIS)
hostile_uri = st.one_of(good_uri, hostile_text.map(lambda t: "urn:a" + t))
NAMES = ["message", "body", "x", "stanza-id", "addresses", "address", "a", "b", "é", "x.y", "x-y", "_z", "features"]
ATTRIBUTE_NAMES = ["to", "from", "id", "type", "a", "b", "by", "lang", "é", "x-y"]


@st.composite
def trees(draw: st.DrawFn, uris: st.SearchStrategy[str], depth: int = 0, top: bool = True) -> Tree:
    uri = CLIENT_NS if top and draw(st.booleans()) else draw(uris)
    if uri == XML_NS and top:
        uri = CLIENT_NS
    tree = Tree(uri, draw(st.sampled_from(["message", "presence", "iq"] if top else NAMES)))
    for name in draw(st.lists(st.sampled_from(ATTRIBUTE_NAMES), max_size=4, unique=True)):
        tree.attributes[("", name)] = draw(hostile_text)
    for auri, local in draw(st.lists(st.tuples(uris.filter(bool), st.sampled_from(ATTRIBUTE_NAMES)), max_size=3,
                                     unique=True)):
        tree.attributes[(auri, local)] = draw(hostile_text)
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            tree.children.append(draw(hostile_text) if draw(st.booleans()) else draw(trees(uris, depth + 1, False)))
    return tree


@st.composite
def client_text(draw: st.DrawFn, tree: Tree, default: str = CLIENT_NS, scope: dict[str, str] | None = None) -> str:
    """*tree* written as a hostile client might: its own prefixes, quotes and escapes."""
    scope = dict(scope or {})  # prefix -> namespace bound around this element
    declared: dict[str, str] = {}  # declared on this element
    inherited: set[str] = set()  # bound on an ancestor and used here

    def declare(prefix: str, uri: str) -> None:
        declared[prefix] = scope[prefix] = uri

    def pick_prefix(uri: str) -> str:
        bound = [p for p, u in scope.items() if u == uri and p not in declared]
        if bound and draw(st.booleans()):
            inherited.add(bound[0])
            return bound[0]
        free = [p for p in ("p", "q", "ns0", "ns1", "xn0", "stream", "a0") if p not in declared and p not in inherited]
        prefix = draw(st.sampled_from(free))
        declare(prefix, uri)
        return prefix

    if tree.uri == XML_NS:
        tag = "xml:" + tree.name
    elif tree.uri and draw(st.booleans()):
        tag = f"{pick_prefix(tree.uri)}:{tree.name}"
    else:
        tag = tree.name
        if tree.uri != default or draw(st.booleans()):
            declared[""] = default = tree.uri
    parts = []
    for (uri, local), value in tree.attributes.items():
        if not uri:
            name = local
        elif uri == XML_NS:
            name = "xml:" + local
        else:
            name = f"{pick_prefix(uri)}:{local}"
        parts.append((name, value))
    for _ in range(draw(st.integers(0, 2))):  # decoys: prefixes bound to other namespaces
        prefix = draw(st.sampled_from(["xn0", "ns0", "stream", "d"]))
        if prefix not in declared and prefix not in inherited:
            declare(prefix, draw(good_uri.filter(lambda u: u and u != XML_NS)))
    out = ["<" + tag]
    for prefix, uri in declared.items():
        out.append(f" xmlns{':' + prefix if prefix else ''}={draw(attribute(uri))}")
    for name, value in parts:
        out.append(f" {name}={draw(attribute(value))}")
    if not tree.children and draw(st.booleans()):
        return "".join(out) + "/>"
    out.append(">")
    for child in tree.children:
        out.append(draw(text(child)) if isinstance(child, str) else draw(client_text(child, default, scope)))
    return "".join(out) + f"</{tag}>"


def _reference(c: str, draw: st.DrawFn) -> str:
    return draw(st.sampled_from([f"&#{ord(c)};", f"&#x{ord(c):x};"]))


@st.composite
def attribute(draw: st.DrawFn, value: str) -> str:
    quote = draw(st.sampled_from("'\""))
    out = []
    for c in value:
        if c in "\t\n\r":  # a parser would normalize them to spaces
            out.append(_reference(c, draw))
        elif c in "&<" or c == quote:
            named = {"&": "&amp;", "<": "&lt;", "'": "&apos;", '"': "&quot;"}[c]
            out.append(named if draw(st.booleans()) else _reference(c, draw))
        elif draw(st.integers(0, 9)) == 0:
            out.append(_reference(c, draw))
        else:
            out.append(c)
    return quote + "".join(out) + quote


@st.composite
def text(draw: st.DrawFn, value: str) -> str:
    if value and "]]>" not in value and "\r" not in value and draw(st.booleans()):
        return f"<![CDATA[{value}]]>"
    out: list[str] = []
    for c in value:
        if c in "&<\r" or (c == ">" and ("".join(out[-2:]).endswith("]]") or draw(st.booleans()))):
            out.append({"&": "&amp;", "<": "&lt;", ">": "&gt;"}.get(c) if c != "\r" else _reference(c, draw))
        elif draw(st.integers(0, 9)) == 0:
            out.append(_reference(c, draw))
        else:
            out.append(c)
    return "".join(out)


def namespaces(tree: Tree) -> set[str]:
    found = {tree.uri} | {uri for uri, _ in tree.attributes}
    for child in tree.children:
        if isinstance(child, Tree):
            found |= namespaces(child)
    return found


# -- the properties


#: ElementTree (and so slixmpp) reads a name as {namespace}local, so expat refuses
#: a namespace name holding '}' for it; chatgate's parser refuses one anyway
readable_uri = hostile_uri.filter(lambda u: "}" not in u)


@PROPERTY
@given(tree=trees(readable_uri), form=st.sampled_from(sorted(FORMS)))
def test_what_the_writer_writes_reads_back_as_the_tree(tree, form):
    default, prefixes = FORMS[form]
    written = serialize(to_domish(tree), default, prefixes)
    read = read_back(written, default, prefixes)
    assert len(read) == 1, written
    assert from_etree(read[0]) == tree.canonical(), written


HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
          b" xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")


@PROPERTY
@given(data=st.data(), tree=trees(hostile_uri))
def test_what_a_client_sends_is_parsed_as_meant_and_written_back_to_it(data, tree):
    sent = data.draw(client_text(tree))
    stanzas = []
    parser = StreamParser(lambda header: None, stanzas.append, lambda: None, 1 << 20, 64)
    try:
        parser.feed(HEADER + sent.encode("utf-8"))
    except StreamError as error:
        # refused only for a namespace name that is not a URI
        assert error.condition == "bad-format" and any(NOT_URI.search(u) for u in namespaces(tree)), (error, sent)
        return
    assert any(NOT_URI.search(u) for u in namespaces(tree)) is False, sent
    assert len(stanzas) == 1, sent
    assert from_domish(stanzas[0]) == tree.canonical(), sent
    for default, prefixes in FORMS.values():
        written = serialize(stanzas[0], default, prefixes)
        read = read_back(written, default, prefixes)
        assert len(read) == 1 and from_etree(read[0]) == tree.canonical(), (sent, written)


def test_the_attack_of_the_review_is_refused_and_would_be_written_harmlessly():
    attack = ("<message to='bob@example.com' type='chat'><body>hi bob</body><x xmlns=\"urn:a'/>&lt;/message>"
              "&lt;message from='boss@othercorp.org/x' to='bob@example.com' type='chat'>&lt;body>FORGED&lt;/body>"
              "&lt;/message>&lt;message type='chat'>&lt;x b='\"/></message>")
    parser = StreamParser(lambda header: None, lambda stanza: None, lambda: None, 1 << 20)
    try:
        parser.feed(HEADER + attack.encode())
    except StreamError as error:
        assert error.condition == "bad-format"
    else:
        raise AssertionError("a namespace name that is not a URI was accepted")
    # built by hand, the same value is written inside its quotes
    message = Element((CLIENT_NS, "message"))
    message["to"] = "bob@example.com"
    message.addElement(("urn:a'/></message><message from='boss@othercorp.org/x'><body>FORGED</body></message>",
                        "x"))
    for default, prefixes in FORMS.values():
        read = read_back(serialize(message, default, prefixes), default, prefixes)
        assert len(read) == 1 and read[0].get("from") is None
        assert [c.tag for c in read[0]] == [f"{{{message.children[0].uri}}}x"]
