"""Restricted XML stream parsing for XMPP (RFC 6120 §11, "XML Usage").

Bytes go in, L{Element} objects (domish Elements) come out: the
C{<stream:stream>} header, then every complete first-level child (stanza or
nonza), then the end of the stream. Anything the restricted profile forbids
raises L{StreamError} carrying the RFC 6120 §4.9.3 condition to send:

  - DOCTYPE, internal or external DTD subset, entity declarations, comments and
    processing instructions (§11.1): C{restricted-xml}. The check fires on the
    DOCTYPE itself, so no entity is ever declared or expanded (billion laughs).
    The XML declaration at the very start is allowed.
  - anything expat rejects (§11.3: malformed XML, invalid UTF-8, NUL, mismatched
    tags, undefined entity references, data after the stream closed):
    C{not-well-formed}. Only the five predefined entities and character
    references are known, so any other reference is undefined.
  - an XML declaration naming an encoding other than UTF-8 (§11.6):
    C{unsupported-encoding}.
  - non-whitespace text directly inside the stream element: C{bad-format}.
  - a stanza, from the first byte of its start tag to the last byte of its end
    tag, longer than C{max_stanza_size} bytes, or a stream header longer than
    that, or nesting deeper than C{max_depth} (the header is depth 1):
    C{policy-violation} (§13.12). Bytes of an unfinished token count as soon as
    they arrive, so expat never holds more than about C{max_stanza_size} bytes;
    whitespace between stanzas is consumed and never counts.

  - a namespace name that is not a URI reference (whitespace, quotes, C{<},
    C{>} and the other characters RFC 3986 never allows): C{bad-format}. No
    legitimate client sends one; refusing it keeps hostile values out of
    everything downstream, though L{serialize} alone is already safe.

Once a L{StreamError} was raised or L{StreamParser.close} was called, C{feed}
ignores further data.

Output: L{serialize} is the one serializer of everything chatgate writes as
XML (to clients, to the archive, to offline storage). Every attribute value,
namespace name and text node is escaped for where it is written, and the
prefixes a client declared are never reused, so what it writes parses back to
exactly the tree that was meant: no value can close its quotes or its element.
"""

from __future__ import annotations

import pyexpat
import re
import weakref
from collections.abc import Callable
from typing import Any

from twisted.words.xish import domish

STREAMS_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# Cannot occur in XML 1.0 names or namespace names, so splitting is unambiguous.
_SEPARATOR = "\x1f"
# A start, end or empty-element tag that expat already accepted; quoted values may hold '>'.
_TAG = re.compile(rb"""<(?:[^>"']|"[^"]*"|'[^']*')*>""")
_XML_WHITESPACE = " \t\r\n"
# What RFC 3986 never allows in a URI reference (nor RFC 3987 in an IRI).
_NOT_URI = re.compile(r"[\x00-\x20\x7f\"'<>\\^`{|}]")


class StreamError(Exception):
    """A stream-level error: condition is an RFC 6120 §4.9.3 condition name."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


class Element(domish.Element):
    """A domish Element that holds its parent weakly: the element chatgate builds.

    A plain domish tree is a reference cycle (each child's ``parent`` and the
    parent's ``children``), so every stanza dropped after delivery waited for the
    cyclic garbage collector; under load collecting them was most of the
    collector's work and set the pace of its pauses. Without the cycle a stanza
    is freed as soon as the last reference goes. ``parent`` still answers while
    the parent lives, which is whenever the child was reached from it.
    """

    _parent: Callable[[], domish.Element | None] | None = None

    @property  # type: ignore[override]
    def parent(self) -> domish.Element | None:
        return self._parent() if self._parent is not None else None

    @parent.setter
    def parent(self, value: domish.Element | None) -> None:
        self._parent = weakref.ref(value) if value is not None else None

    def toXml(self, prefixes: dict[str, str] | None = None, closeElement: int = 1, defaultUri: str = "",
              prefixesInScope: list[str] | None = None) -> str:
        """domish's signature, written by L{serialize}: *prefixes* whose names are
        in *prefixesInScope* count as declared around the element."""
        if not closeElement:
            raise ValueError("chatgate writes whole elements only")
        scope = prefixesInScope or ()
        return serialize(self, defaultUri, {u: p for u, p in (prefixes or {}).items() if p in scope})

    def addElement(self, name: Any, defaultUri: str | None = None, content: str | None = None) -> Element:
        """domish's addElement, making the child an L{Element} too."""
        if isinstance(name, tuple):
            child = Element(name, name[0] if defaultUri is None else defaultUri)
        else:
            uri = self.defaultUri if defaultUri is None else defaultUri
            child = Element((uri, name), uri)
        self.addChild(child)
        if content:
            child.addContent(content)
        return child


class _Closed(Exception):
    """Stops expat when a callback closed the parser in the middle of a chunk."""


def _split(name: str) -> tuple[str, str]:
    uri, _, local = name.rpartition(_SEPARATOR)
    return uri, local


def _forbid(what: str) -> Callable[..., None]:
    def handler(*args: object) -> None:
        raise StreamError("restricted-xml", f"{what} not allowed")

    return handler


class StreamParser:
    """Incremental parser for one XML stream (RFC 6120 §4, §11).

    C{on_start(header)} gets the C{<stream:stream>} element, C{on_element(stanza)}
    each complete first-level child (detached: its parent is None), C{on_end()}
    the closing C{</stream:stream>}. Callbacks run while C{feed} is parsing; one
    may call C{close} (a stream restart), which drops the rest of the chunk.
    C{max_stanza_size} may be changed at any time (raised after authentication).
    """

    def __init__(
        self,
        on_start: Callable[[domish.Element], object],
        on_element: Callable[[domish.Element], object],
        on_end: Callable[[], object],
        max_stanza_size: int,
        max_depth: int = 64,
    ) -> None:
        self.on_start = on_start
        self.on_element = on_element
        self.on_end = on_end
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self._fed = 0  # bytes given to expat so far: the scale of CurrentByteIndex
        self._open: list[domish.Element] = []  # header, stanza, its children ...
        self._default_ns = [""]
        self._prefixes: dict[str, str] = {}  # declared on the element about to start
        self._stanza_start = 0
        self._stanza_empty = False

        parser = pyexpat.ParserCreate("UTF-8", _SEPARATOR)
        if hasattr(parser, "SetReparseDeferralEnabled"):
            parser.SetReparseDeferralEnabled(False)
        parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.buffer_text = True
        parser.StartDoctypeDeclHandler = _forbid("DOCTYPE")
        parser.EntityDeclHandler = _forbid("entity declarations")
        parser.CommentHandler = _forbid("comments")
        parser.ProcessingInstructionHandler = _forbid("processing instructions")
        parser.XmlDeclHandler = self._xml_declaration
        parser.StartNamespaceDeclHandler = self._start_namespace
        parser.EndNamespaceDeclHandler = self._end_namespace
        parser.StartElementHandler = self._start_element
        parser.EndElementHandler = self._end_element
        parser.CharacterDataHandler = self._text
        self._parser: pyexpat.XMLParserType | None = parser

    def feed(self, data: bytes) -> None:
        """Parse more bytes of the stream; raises L{StreamError}."""
        view = memoryview(data)
        try:
            while view and self._parser is not None:
                # Never hand expat more than one byte past the limit, so an
                # endless token fails at exactly limit + 1 pending bytes.
                size = max(1, self.max_stanza_size + 1 - self._pending())
                piece, view = view[:size], view[size:]
                self._fed += len(piece)
                self._parser.Parse(piece)
                if self._parser is not None and self._pending() > self.max_stanza_size:
                    raise StreamError("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        except _Closed:
            pass
        except pyexpat.ExpatError as error:
            self.close()
            raise StreamError("not-well-formed", str(error)) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Drop the expat state; later L{feed} calls are ignored."""
        self._parser = None
        self._open = []

    def _pending(self) -> int:
        """Bytes counting toward the limit: the open stanza, else the unparsed tail."""
        if len(self._open) >= 2:
            return self._fed - self._stanza_start
        return self._fed - max(self._parser.CurrentByteIndex, 0)

    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_stanza_size:
            raise StreamError("policy-violation", f"{what} larger than {self.max_stanza_size} bytes")

    def _current_tag(self) -> bytes:
        """The raw tag of the current start/end event (only needed near the limit)."""
        return _TAG.match(self._parser.GetInputContext()).group()

    def _emit(self, callback: Callable[..., object], *args: object) -> None:
        callback(*args)
        if self._parser is None:
            raise _Closed()

    # -- expat handlers

    def _xml_declaration(self, version: str, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() != "utf-8":
            raise StreamError("unsupported-encoding", f"encoding {encoding!r}; only UTF-8 is allowed")

    def _start_namespace(self, prefix: str | None, uri: str | None) -> None:
        if uri and _NOT_URI.search(uri):
            raise StreamError("bad-format", "a namespace name is not a URI")
        if prefix is None:
            self._default_ns.append(uri or "")
        else:
            self._prefixes[prefix] = uri or ""

    def _end_namespace(self, prefix: str | None) -> None:
        if prefix is None:
            self._default_ns.pop()

    def _start_element(self, name: str, attributes: dict[str, str]) -> None:
        depth = len(self._open) + 1
        if depth > self.max_depth:
            raise StreamError("policy-violation", f"elements nested deeper than {self.max_depth}")
        attrs: dict[str | tuple[str, str], str] = {}
        for key, value in attributes.items():
            uri, local = _split(key)
            attrs[(uri, local) if uri else local] = value
        element = Element(_split(name), self._default_ns[-1], attrs, self._prefixes)
        self._prefixes = {}
        start = self._parser.CurrentByteIndex
        if depth == 1:
            if self._fed - start > self.max_stanza_size:
                self._check_size(len(self._current_tag()), "stream header")
            self._open.append(element)
            self._emit(self.on_start, element)
            return
        if depth == 2:
            self._stanza_start = start
            self._stanza_empty = False
            if self._fed - start > self.max_stanza_size:  # it may end within this chunk
                tag = self._current_tag()
                self._check_size(len(tag), "stanza")
                self._stanza_empty = tag.endswith(b"/>")
        else:
            self._open[-1].addChild(element)
        self._open.append(element)

    def _end_element(self, name: str) -> None:
        element = self._open.pop()
        if not self._open:
            self._emit(self.on_end)
        elif len(self._open) == 1:
            if self._fed - self._stanza_start > self.max_stanza_size and not self._stanza_empty:
                end = self._parser.CurrentByteIndex + len(self._current_tag())
                self._check_size(end - self._stanza_start, "stanza")
            self._emit(self.on_element, element)

    def _text(self, data: str) -> None:
        if len(self._open) >= 2:
            self._open[-1].addContent(data)
        elif data.strip(_XML_WHITESPACE):
            raise StreamError("bad-format", "text outside stanzas")


def parse_document(data: bytes, max_size: int, max_depth: int = 64) -> domish.Element:
    """Parse one whole restricted-XML document (a BOSH <body/>), same rules; raises StreamError."""
    if len(data) > max_size:
        raise StreamError("policy-violation", f"document larger than {max_size} bytes")
    root: list[domish.Element] = []
    ended: list[bool] = []

    def add_child(child: domish.Element) -> None:
        root[0].addChild(child)

    parser = StreamParser(root.append, add_child, lambda: ended.append(True), max_size, max_depth)
    parser.feed(data)
    parser.close()
    if not ended:
        raise StreamError("not-well-formed", "incomplete document")
    return root[0]


def parse_fragment(text: str, max_size: int) -> domish.Element:
    """Read back one element kept as :func:`serialize` wrote it (text directly inside it
    too, which a document's root may not hold); raises StreamError."""
    wrapped = parse_document(b"<kept>" + text.encode("utf-8") + b"</kept>", max_size + 13)
    found = list(wrapped.elements())
    if len(found) != 1:
        raise StreamError("bad-format", "not one element")
    found[0].parent = None
    return found[0]


def copy_element(element: domish.Element) -> domish.Element:
    """A deep copy of *element*, for a stanza that is kept or changed per recipient."""
    copy = Element((element.uri, element.name), element.defaultUri, dict(element.attributes))
    for child in element.children:
        copy.addChild(copy_element(child) if isinstance(child, domish.Element) else child)
    return copy


# -- the one serializer


def escape_text(text: str) -> str:
    """*text* as XML character data. CR is written as a reference, since a
    parser turns a literal one into LF (XML 1.0 §2.11)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def escape_attribute(value: str) -> str:
    """*value* for an attribute in either quote: both quotes, C{<}, C{&}, C{>}
    and the whitespace a parser would normalize (XML 1.0 §3.3.3) as references."""
    value = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
             .replace("'", "&apos;").replace('"', "&quot;"))
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")
    return value


def serialize(element: domish.Element, default_uri: str = "", prefixes: dict[str, str] | None = None) -> str:
    """*element* and everything in it as XML text: the one serializer of chatgate.

    *default_uri* is the default namespace where the text goes (C{jabber:client}
    on a c2s stream, C{""} for a standalone document); *prefixes* maps namespace
    names to prefixes already declared there (C{stream} on a stream). Elements
    are written unprefixed with a default namespace declaration wherever their
    namespace changes; a namespaced attribute gets a prefix declared on its own
    element. Prefixes a client declared (C{localPrefixes}) are never written,
    so none can rebind a name. Every value is escaped (L{escape_attribute},
    L{escape_text}). C{SerializedXML} children (C{addRawXml}) are written as
    they are: only text this function wrote may be put there.
    """
    out: list[str] = []
    _write(out, element, default_uri, _XML_PREFIX if not prefixes else {**prefixes, **_XML_PREFIX})
    return "".join(out)


#: bound in every document; never declared, never the default namespace (Namespaces in XML §3)
_XML_PREFIX = {XML_NS: "xml"}


def _write(out: list[str], element: domish.Element, default: str, fixed: dict[str, str]) -> None:
    uri = element.uri
    if uri is None:  # domish: an element without a namespace takes its parent's default
        uri = default
    prefix = fixed.get(uri)
    if prefix is not None:
        tag = f"{prefix}:{element.name}"
        out.append("<" + tag)
    else:
        tag = element.name
        out.append("<" + tag)
        if uri != default:
            out.append(" xmlns='" + escape_attribute(uri) + "'")
            default = uri
    attributes = element.attributes
    if attributes:
        declared: dict[str, str] | None = None
        for key, value in attributes.items():
            if key.__class__ is str:
                out.append(" " + key + "='" + escape_attribute(value) + "'")
                continue
            attribute_uri, local = key
            if not attribute_uri:
                name = local
            else:
                declared = {} if declared is None else declared
                attribute_prefix = fixed.get(attribute_uri) or declared.get(attribute_uri)
                if attribute_prefix is None:
                    attribute_prefix = _fresh_prefix(declared, fixed)
                    declared[attribute_uri] = attribute_prefix
                    out.append(f" xmlns:{attribute_prefix}='{escape_attribute(attribute_uri)}'")
                name = f"{attribute_prefix}:{local}"
            out.append(" " + name + "='" + escape_attribute(value) + "'")
    children = element.children
    if not children:
        out.append("/>")
        return
    out.append(">")
    for child in children:
        if child.__class__ is str:
            out.append(escape_text(child))
        elif isinstance(child, domish.SerializedXML):
            out.append(child)
        elif isinstance(child, str):
            out.append(escape_text(child))
        else:
            _write(out, child, default, fixed)
    out.append("</" + tag + ">")


def _fresh_prefix(declared: dict[str, str], fixed: dict[str, str]) -> str:
    """A prefix for an attribute's namespace on one element, unlike any in use there."""
    taken = set(declared.values()) | set(fixed.values())
    n = len(declared)
    while f"ns{n}" in taken:
        n += 1
    return f"ns{n}"
