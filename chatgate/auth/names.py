"""Stringprep (RFC 7622 §3.3, §3.4) of the names every login carries, fast.

Each login prepares the localpart its SASL exchange names (nodeprep) and the
resource it binds (resourceprep); Twisted's profiles do that a code point at
a time through the Unicode tables, 6-12 µs each, more than the rest of
binding. Names are almost always plain ASCII, and on ASCII a profile is
character by character: mapping (case folding for nodeprep), normalization
(NFKC leaves ASCII as it is), the prohibited and unassigned tables and the
bidi rule (no ASCII character is right-to-left) each look at one character
alone. So the table of what the very same Twisted profile makes of each of
the 128 ASCII characters, taken once at import, gives the same result for any
ASCII string; anything else, and any string with a refused character (to get
Twisted's own UnicodeError), goes through the profile itself.
"""

from __future__ import annotations

import re

from twisted.words.protocols.jabber.xmpp_stringprep import Profile
from twisted.words.protocols.jabber.xmpp_stringprep import nodeprep as _nodeprep
from twisted.words.protocols.jabber.xmpp_stringprep import resourceprep as _resourceprep


class ASCIIFastProfile:
    """A Twisted stringprep :class:`Profile` with a shortcut for ASCII strings."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        mapping: dict[int, str] = {}
        refused = []
        for code in range(128):
            char = chr(code)
            try:
                prepared = profile.prepare(char)
            except UnicodeError:
                refused.append(char)
                continue
            if prepared != char:
                mapping[code] = prepared
        self._mapping = str.maketrans(mapping)
        self._refused = re.compile("[" + re.escape("".join(refused)) + "]") if refused else None

    def prepare(self, text: str) -> str:
        """``profile.prepare(text)``; raises UnicodeError as it does."""
        if text.isascii() and (self._refused is None or self._refused.search(text) is None):
            return text.translate(self._mapping)
        return self.profile.prepare(text)


#: RFC 7622 §3.3 (Nodeprep of RFC 3920 Appendix A, as Twisted implements it)
nodeprep = ASCIIFastProfile(_nodeprep)
#: RFC 7622 §3.4 (Resourceprep of RFC 3920 Appendix B, as Twisted implements it)
resourceprep = ASCIIFastProfile(_resourceprep)
