"""Coverage-guided fuzzing (atheris) of the two parsers clients reach first:
the c2s stream parser and the BOSH body parser (chatgate.xml).

Every input must end in StreamError or parse cleanly; any other exception,
a hang or a crash is a finding. The first byte picks the parser and how the
rest is split into feed() calls, so chunk boundaries are fuzzed too.

    .venv/bin/pip install atheris
    mkdir -p var/fuzz-corpus
    .venv/bin/python fuzz/parsers.py -runs=1000000 -max_len=4096 var/fuzz-corpus fuzz/seeds

Results of the long campaign are in bench/RESULTS.md.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from chatgate.xml import StreamError, StreamParser, parse_document

LIMIT = 8192


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, body = data[0], data[1:]
    try:
        if mode & 1:
            parse_document(body, LIMIT, max_depth=16)
            return
        parser = StreamParser(lambda header: None, lambda stanza: stanza.toXml(), lambda: None, LIMIT, 16)
        step = (mode >> 1) + 1
        for i in range(0, len(body), step):
            parser.feed(body[i:i + step])
    except StreamError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
