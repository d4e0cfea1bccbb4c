"""chatgate.tls: the self-signed first-start certificate and the TLS options."""

from __future__ import annotations

import os
import socket
import ssl
import stat

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import protocol, reactor, threads

from chatgate.config import ConfigError
from chatgate.tls import context_factory, ensure_certificate


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """One generated pair for the tests that only read it (RSA generation takes a moment)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "var" / "chatgate.crt"), str(folder / "var" / "chatgate.key")
    assert ensure_certificate(cert, key, ["example.com", "chat.example.org"]) is True
    return cert, key


def test_makes_files_in_new_folders_with_private_key(pair):
    cert, key = pair
    assert os.path.isfile(cert)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_names_every_host_and_localhost(pair):
    with open(pair[0], "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["example.com", "chat.example.org", "localhost"]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime.days >= 3649


def test_existing_pair_is_kept(pair):
    cert, key = pair
    before = open(cert, "rb").read()
    assert ensure_certificate(cert, key, ["other.example"]) is False
    assert open(cert, "rb").read() == before


def test_lone_certificate_is_not_overwritten(tmp_path, pair):
    cert = tmp_path / "real.crt"
    cert.write_bytes(open(pair[0], "rb").read())
    with pytest.raises(ConfigError, match=r"^\[tls\] key: .*missing\.key does not exist"):
        ensure_certificate(str(cert), str(tmp_path / "missing.key"), ["example.com"])
    assert cert.read_bytes() == open(pair[0], "rb").read()


def test_unicode_domain_becomes_a_label(tmp_path):
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    ensure_certificate(cert, key, ["bücher.example", "127.0.0.1"])
    with open(cert, "rb") as f:
        names = x509.load_pem_x509_certificate(f.read()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    assert names.value.get_values_for_type(x509.DNSName) == ["xn--bcher-kva.example", "localhost"]
    assert [str(a) for a in names.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_context_loads(pair):
    options = context_factory(*pair)
    assert options.certificate is not None


def test_mismatched_key_is_one_line_naming_the_file(tmp_path, pair):
    other_cert, other_key = str(tmp_path / "o.crt"), str(tmp_path / "o.key")
    ensure_certificate(other_cert, other_key, ["example.com"])
    with pytest.raises(ConfigError) as caught:
        context_factory(pair[0], other_key)
    message = str(caught.value)
    assert message.startswith("[tls] certificate: ")
    assert pair[0] in message and "does not match" in message and "\n" not in message


def test_missing_file_is_one_line_naming_the_file(tmp_path, pair):
    with pytest.raises(ConfigError, match=r"^\[tls\] key: cannot read .*nope\.key: No such file"):
        context_factory(pair[0], str(tmp_path / "nope.key"))


def test_garbage_files(tmp_path, pair):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^\[tls\] certificate: .*junk\.pem holds no PEM certificate$"):
        context_factory(str(junk), pair[1])
    with pytest.raises(ConfigError, match=r"^\[tls\] key: .*junk\.pem holds no usable PEM private key$"):
        context_factory(pair[0], str(junk))
    with pytest.raises(ConfigError, match=r"^\[tls\] key: .*chatgate\.crt holds no usable PEM private key$"):
        context_factory(pair[0], pair[0])  # the certificate given as the key


# -- a real handshake over loopback: the stdlib client against a Twisted server


class _Greeting(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"hello\n")


def _handshake(port: int, cafile: str, **client) -> tuple[str, str, bytes]:
    """Connect with the stdlib client; (TLS version, cipher, first bytes)."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = client.pop("minimum", ssl.TLSVersion.MINIMUM_SUPPORTED)
    context.maximum_version = client.pop("maximum", ssl.TLSVersion.MAXIMUM_SUPPORTED)
    if "ciphers" in client:
        context.set_ciphers(client.pop("ciphers"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version(), tls.cipher()[0], tls.recv(6)


@pytest.fixture
def server(pair):
    factory = protocol.Factory.forProtocol(_Greeting)
    port = reactor.listenSSL(0, factory, context_factory(*pair), interface="127.0.0.1")
    yield port.getHost().port
    port.stopListening()


@pytest_twisted.inlineCallbacks
def test_handshake_tls13(server, pair):
    version, _, data = yield threads.deferToThread(_handshake, server, pair[0])
    assert (version, data) == ("TLSv1.3", b"hello\n")


@pytest_twisted.inlineCallbacks
def test_handshake_tls12_is_forward_secret(server, pair):
    version, cipher, _ = yield threads.deferToThread(
        _handshake, server, pair[0], maximum=ssl.TLSVersion.TLSv1_2
    )
    assert version == "TLSv1.2"
    assert cipher.startswith(("ECDHE-", "DHE-")) and ("GCM" in cipher or "CHACHA20" in cipher)


@pytest_twisted.inlineCallbacks
def test_static_rsa_key_exchange_is_refused(server, pair):
    with pytest.raises(ssl.SSLError) as caught:
        yield threads.deferToThread(
            _handshake, server, pair[0], maximum=ssl.TLSVersion.TLSv1_2, ciphers="AES128-GCM-SHA256"
        )
    assert caught.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"  # the server's answer


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_tls11_is_refused(server, pair):
    def old_client():
        # Security level 0, or the client's own OpenSSL would refuse TLS 1.1.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.set_ciphers("ALL:@SECLEVEL=0")
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", server), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                return tls.version()

    with pytest.raises(ssl.SSLError) as caught:
        yield threads.deferToThread(old_client)
    assert caught.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"  # the server's answer
