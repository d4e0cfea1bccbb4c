"""The one serializer against the one it replaced: chatgate.xml.serialize vs
Twisted's domish toXml, on the stanzas the hot paths write.

Each stanza is parsed by chatgate's own parser (as a client's would be) and
written in the c2s form (jabber:client default, stream prefix bound); the
figure is the best of five runs of N writes, in microseconds per write. The
two outputs are checked equal where domish's is safe (no hostile values).
Last, what MAM pays per result for reading an archived stanza back through
the restricted parser instead of splicing its text in.

    .venv/bin/python bench/serialize.py [-n 100000]

Results in bench/RESULTS.md, "Output: the one serializer".
"""

from __future__ import annotations

import argparse
import timeit

from twisted.words.xish import domish

from chatgate.xml import CLIENT_NS, STREAMS_NS, parse_document, serialize

STANZAS = {
    "chat message with chat state and stanza-id": (
        b"<message xmlns='jabber:client' to='bob@example.com/desk' from='alice@example.com/phone' type='chat'"
        b" id='a1b2c3d4'><body>Hello there, how are you doing today? Lunch at noon?</body>"
        b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
        b"<stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.com' id='0661d44da51290-15c2734'/></message>"),
    "presence with show, status, priority": (
        b"<presence xmlns='jabber:client' from='alice@example.com/phone' xml:lang='en'><show>away</show>"
        b"<status>At lunch &amp; back at two</status><priority>5</priority></presence>"),
    "alias copy with XEP-0033 ofrom": (
        b"<message xmlns='jabber:client' to='bob@example.com' from='sales@example.com/alice' type='chat'>"
        b"<body>Quarterly figures are in</body><addresses xmlns='http://jabber.org/protocol/address'>"
        b"<address type='ofrom' jid='alice@example.com'/></addresses></message>"),
}
PREFIXES = {STREAMS_NS: "stream"}


def best(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="writes per run")
    args = parser.parse_args()
    print("| stanza | chatgate.xml.serialize | domish toXml | |\n| --- | ---: | ---: | ---: |")
    for name, data in STANZAS.items():
        element = parse_document(data, 65536)
        ours = serialize(element, CLIENT_NS, PREFIXES)
        theirs = domish.Element.toXml(element, prefixes=PREFIXES, defaultUri=CLIENT_NS, prefixesInScope=["stream"])
        assert ours == theirs, (ours, theirs)
        a = best(lambda e=element: serialize(e, CLIENT_NS, PREFIXES), args.n)
        b = best(lambda e=element: domish.Element.toXml(e, prefixes=PREFIXES, defaultUri=CLIENT_NS,
                                                        prefixesInScope=["stream"]), args.n)
        print(f"| {name} | {a:.2f} µs | {b:.2f} µs | {b / a:.2f}x |")
    archived = serialize(parse_document(STANZAS["chat message with chat state and stanza-id"], 65536))
    data = archived.encode("utf-8")
    read = best(lambda: parse_document(data, 65536), args.n // 10)
    print(f"\nMAM: reading one archived chat message back (parse_document, {len(data)} bytes): {read:.1f} µs")


if __name__ == "__main__":
    main()
