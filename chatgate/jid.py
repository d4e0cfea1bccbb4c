"""Checks on user and domain addresses that Twisted's JID parser leaves out.

``twisted.words.protocols.jabber.jid`` applies stringprep (nodeprep,
nameprep) but accepts addresses RFC 7622 §3 refuses or that no DNS could
serve: empty labels (``a@b..c`` even raises IndexError), parts over 1023
bytes (§3.1), IP literals and names without a dot. chatgate hosts email
domains, so a domain must also be a DNS host name: labels of 1-63
letters/digits/hyphens (after IDNA ToASCII), not starting or ending with a
hyphen, at least two labels, at most 253 characters.

Both functions return the prepared (case-folded) form and raise ValueError
with one line naming the bad value.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.xmpp_stringprep import nameprep, nodeprep

#: RFC 7622 §3.1: each part is 1 to 1023 octets once prepared
MAX_PART_BYTES = 1023
#: RFC 1035 §2.3.4, in presentation form without the final dot
MAX_DNS_NAME = 253
_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: the label separators RFC 3490 §3.1 (and so nameprep) treats as dots
_DOTS = re.compile("[\u002e\u3002\uff0e\uff61]")


def parse_user(text: str) -> tuple[str, str]:
    """Parse a bare user address ``localpart@domain`` into prepared parts."""
    if "/" in text:
        raise _invalid(text, "a resource (/...) is not allowed here")
    localpart, at, domain = text.partition("@")
    if not at or not localpart:
        raise _invalid(text, "missing localpart (expected user@domain)")
    try:
        prepared = nodeprep.prepare(localpart)
    except UnicodeError as e:
        raise _invalid(text, f"{_lower(e)} in localpart") from None
    if not prepared:
        raise _invalid(text, "empty localpart")
    if len(prepared.encode("utf-8")) > MAX_PART_BYTES:
        raise _invalid(text, f"localpart is longer than {MAX_PART_BYTES} bytes")
    try:
        return prepared, _domain(domain)
    except ValueError as e:
        raise _invalid(text, str(e)) from None


def parse_domain(text: str) -> str:
    """Parse a domain name (a domainpart on its own) into its prepared form."""
    try:
        return _domain(text)
    except ValueError as e:
        raise _invalid(text, str(e), "domain") from None


def _domain(text: str) -> str:
    """Prepare and check a domainpart; ValueError carries the bare reason."""
    if not text:
        raise ValueError("missing domain")
    if len(text.encode("utf-8")) > MAX_PART_BYTES:
        raise ValueError(f"domain is longer than {MAX_PART_BYTES} bytes")
    if text.startswith("[") or _is_ip(text):
        raise ValueError("an IP address is not accepted as a domain")
    name = text[:-1] if _DOTS.fullmatch(text[-1]) else text  # §3.2: strip one final dot
    labels = _DOTS.split(name)
    if any(not label for label in labels):
        raise ValueError("domain has an empty label")
    try:
        prepared = nameprep.prepare(name)
    except UnicodeError as e:
        raise ValueError(f"{_lower(e)} in domain") from None
    labels = prepared.split(".")
    if len(labels) < 2:
        raise ValueError("domain needs at least one dot")
    ascii_labels = [_ascii_label(label) for label in labels]
    for label in ascii_labels:
        if not _LDH_LABEL.match(label):
            raise ValueError(f"domain label {label!r} is not 1-63 letters, digits or inner hyphens")
    if len(".".join(ascii_labels)) > MAX_DNS_NAME:
        raise ValueError(f"domain is longer than {MAX_DNS_NAME} characters")
    if ascii_labels[-1].isdigit():
        raise ValueError("an IP address is not accepted as a domain")
    return prepared


def _ascii_label(label: str) -> str:
    """The label's IDNA ToASCII form (RFC 3490 §4.1), as DNS would carry it."""
    if label.isascii():
        return label
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"domain label {label!r} is not a valid internationalized label") from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _lower(error: Exception) -> str:
    message = str(error)
    return message[:1].lower() + message[1:]


def _invalid(text: str, reason: str, what: str = "address") -> ValueError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ValueError(f"invalid {what} {shown!r}: {reason}")


@functools.lru_cache(maxsize=65536)
def jid_of(text: str) -> JID:
    """``JID(text)``, remembered: stringprep costs far more than routing a
    stanza, and the same addresses come back all the time. Bounded, so no
    client can grow it; raises InvalidFormat like JID() (failures are not kept).
    The JIDs are shared: never change one."""
    return JID(text)
