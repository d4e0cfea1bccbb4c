"""What the delivery path drops is freed at once, not left to the cyclic
garbage collector: parsed and built stanzas hold their parent weakly, and the
SQLite worker thread takes calls without Twisted's per-call closure cycle.
Under load the collector's pauses set the BOSH latency tail (bench/RESULTS.md,
"the S3 tail"); these tests keep the hot path free of reference cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from chatgate.storage.sqlite_worker import SQLiteWorker
from chatgate.xml import Element, StreamParser, copy_element, parse_document

STANZA = (
    b"<message to='bob@example.com' type='chat' id='m1'><body>Hi</body>"
    b"<x xmlns='urn:example'><y><z/></y></x></message>"
)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_stanza() -> Element:
    stanzas: list[Element] = []
    parser = StreamParser(lambda header: None, stanzas.append, lambda: None, 4096)
    parser.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" + STANZA)
    return stanzas.pop()  # the parser (alive until collected) keeps nothing of it


def tree(element: Element) -> list[Element]:
    return [element, *(e for child in element.elements() for e in tree(child))]


def test_a_parsed_stanza_knows_its_parents_and_is_freed_when_dropped(collector_off: None) -> None:
    stanza = parse_stanza()
    stanza.addElement(("urn:xmpp:sid:0", "stanza-id"))  # what the archive adds
    body, x, sid = list(stanza.elements())
    assert isinstance(sid, Element) and sid.parent is stanza
    assert body.parent is stanza and x.y.parent is x and x.y.z.parent is x.y
    refs = [weakref.ref(e) for e in tree(stanza)]
    assert len(refs) == 6
    del stanza, body, x, sid
    assert [r for r in refs if r() is not None] == []


def test_copies_and_bosh_bodies_are_freed_when_dropped(collector_off: None) -> None:
    body = parse_document(b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>" + STANZA + b"</body>", 4096)
    copy = copy_element(next(body.elements()))
    assert copy.toXml() == next(body.elements()).toXml()
    refs = [weakref.ref(e) for e in tree(body) + tree(copy)]
    del body, copy
    assert [r for r in refs if r() is not None] == []


@pytest_twisted.ensureDeferred
async def test_worker_calls_leave_no_cycles(tmp_path) -> None:
    worker = SQLiteWorker(str(tmp_path / "w.sqlite"), "test-worker", RuntimeError, "stopped", reactor)
    await worker.start(lambda db: None)
    try:
        gc.collect()
        gc.disable()
        try:
            results = await defer.gatherResults([worker.run(pow, n, 2) for n in range(200)])
            unreachable = gc.collect()
        finally:
            gc.enable()
        assert results == [n * n for n in range(200)]
        # Twisted's ThreadPool left four unreachable objects per call (800 here).
        assert unreachable < 50
    finally:
        await worker.stop()
