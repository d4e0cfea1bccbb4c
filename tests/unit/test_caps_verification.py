"""XEP-0115 §5: the verification string and hash of a disco#info answer, on the XEP's own examples,
and the answers §5.4 says not to trust."""

from __future__ import annotations

from chatgate.stanza import caps_hash, caps_verification
from chatgate.xml import parse_document

INFO = "http://jabber.org/protocol/disco#info"


def query(body: str):
    return parse_document(f"<query xmlns='{INFO}'>{body}</query>".encode(), 65536)


SIMPLE = ("<identity category='client' name='Exodus 0.9.1' type='pc'/>"
          "<feature var='http://jabber.org/protocol/caps'/><feature var='http://jabber.org/protocol/disco#info'/>"
          "<feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/>")

COMPLEX = (
    "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
    "<identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/><feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/>"
    "<x xmlns='jabber:x:data' type='result'>"
    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
    "<field var='os'><value>Mac</value></field><field var='os_version'><value>10.5.1</value></field>"
    "<field var='software'><value>Psi</value></field><field var='software_version'><value>0.11</value></field>"
    "</x>")


def test_the_simple_example_hashes_to_its_ver():  # §5.2
    text = caps_verification(query(SIMPLE))
    assert text == ("client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
                    "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<")
    assert caps_hash("sha-1", text) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_the_complex_example_with_languages_and_a_form_hashes_to_its_ver():  # §5.3
    assert caps_hash("sha-1", caps_verification(query(COMPLEX))) == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_answers_not_to_trust_have_no_verification():  # §5.4 3.3-3.5
    assert caps_verification(query(SIMPLE + "<feature var='http://jabber.org/protocol/muc'/>")) is None
    assert caps_verification(query(SIMPLE + "<identity category='client' name='Exodus 0.9.1' type='pc'/>")) is None
    form = ("<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>urn:a</value>"
            "<value>urn:b</value></field></x>")
    assert caps_verification(query(SIMPLE + form)) is None
    assert caps_hash("no-such-hash", "x") is None

