"""chatgate.auth.names: the ASCII shortcut gives exactly what Twisted's profiles give."""

from __future__ import annotations

import itertools
import random

import pytest
from twisted.words.protocols.jabber import xmpp_stringprep

from chatgate.auth import names

PROFILES = [
    (names.nodeprep, xmpp_stringprep.nodeprep),
    (names.resourceprep, xmpp_stringprep.resourceprep),
]


def outcome(profile, text: str) -> tuple[str, str]:
    try:
        return ("ok", profile.prepare(text))
    except UnicodeError as e:
        return ("error", str(e))


@pytest.mark.parametrize(("fast", "reference"), PROFILES, ids=["nodeprep", "resourceprep"])
def test_every_ascii_pair_as_twisted(fast, reference):
    ascii_chars = [chr(c) for c in range(128)]
    for a, b in itertools.product(ascii_chars, repeat=2):
        text = a + b
        assert outcome(fast, text) == outcome(reference, text), repr(text)


@pytest.mark.parametrize(("fast", "reference"), PROFILES, ids=["nodeprep", "resourceprep"])
def test_random_names_as_twisted(fast, reference):
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(128)] + list("ÄéßİıΣς\u00ad\u200b\ufb01ﬀ\u0627\u05d0\u3000 ")
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert outcome(fast, text) == outcome(reference, text), repr(text)


def test_typical_names():
    assert names.nodeprep.prepare("Alice.Smith") == "alice.smith"
    assert names.nodeprep.prepare("ÄLICE") == "älice"
    assert names.resourceprep.prepare("Desk Top/1") == "Desk Top/1"
    assert names.nodeprep.prepare("") == ""
    for bad in ("a b", "a@b", "a/b", "a:b", "a\x00b", "a\x7fb", 'a"b', "a&b", "a'b", "a<b", "a>b"):
        with pytest.raises(UnicodeError):
            names.nodeprep.prepare(bad)
    with pytest.raises(UnicodeError):
        names.resourceprep.prepare("a\tb")
