"""TLS for the XMPP listeners: the server certificate and the context factory.

The settings follow RFC 7590 (use of TLS in XMPP) and the BCP it points to
(RFC 7525): TLS 1.2 and 1.3 only, and for TLS 1.2 only ephemeral (ECDHE/DHE)
key exchange with AEAD ciphers, so every connection has forward secrecy. TLS
1.3 suites are all forward-secret AEAD suites already.

The first start makes a self-signed certificate so the server runs out of the
box; an operator replaces the two files named under ``[tls]`` in
tap-config.ini with a real certificate (a chain file is fine) and its key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from zope.interface import implementer

from chatgate.config import ConfigError
from chatgate.private_files import make_private_folder, new_file

#: TLS 1.2 suites: ephemeral key exchange and AEAD only (RFC 7525 §4.2).
#: TLS 1.3 suites are chosen by OpenSSL and are all forward-secret AEAD.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!DSS"

#: How long a generated self-signed certificate is valid.
VALIDITY = datetime.timedelta(days=3650)


def ensure_certificate(cert_path: str, key_path: str, hostnames: list[str]) -> bool:
    """Make a self-signed certificate and key when neither file exists yet.

    The certificate names each of *hostnames* and ``localhost`` as DNS
    subject alternative names (RFC 6125, as RFC 7590 §3.2 asks; an address
    literal becomes an IP address entry) and is valid for ten years. The key
    is RSA 2048, written with mode 0600 whatever the umask. Missing folders
    are created 0700.

    When both files exist nothing is done. When only one of them exists, it is
    left alone and :class:`ConfigError` is raised: it is most likely a real
    certificate or key whose partner is misnamed, and overwriting it would
    lose it.

    @return: True when a certificate was made.
    """
    have_cert, have_key = os.path.exists(cert_path), os.path.exists(key_path)
    if have_cert and have_key:
        return False
    if have_cert:
        raise ConfigError(
            f"[tls] key: {key_path} does not exist but the certificate {cert_path} does; "
            "fix the path or remove the certificate to have a self-signed pair made"
        )
    if have_key:
        raise ConfigError(
            f"[tls] certificate: {cert_path} does not exist but the key {key_path} does; "
            "fix the path or remove the key to have a self-signed pair made"
        )

    alt_names = _alt_names([*hostnames, "localhost"])
    common_name = str(alt_names[0].value)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key first: a certificate on disk always has its key beside it.
    _write(key_path, key_pem, mode=0o600, setting="key")
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644, setting="certificate")
    return True


def context_factory(cert_path: str, key_path: str) -> CertificateOptions:
    """Load the PEM certificate (and any chain after it) and key into TLS options.

    The result serves both STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368):
    TLS 1.2 and 1.3 only, forward-secret AEAD suites only (RFC 7590 §3.1,
    RFC 7525 §4.2).

    @raise ConfigError: a file cannot be read or parsed, or the key does not
        belong to the certificate; the message is one line naming the file.
    """
    cert_pem = _read(cert_path, "certificate")
    key_pem = _read(key_path, "key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"[tls] certificate: {cert_path} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(
            f"[tls] key: {key_path} is encrypted; a key without a passphrase is needed"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"[tls] key: {key_path} holds no usable PEM private key") from None
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise ConfigError(f"[tls] certificate: {cert_path} does not match the key {key_path}")

    # Let OpenSSL accept the pair now, so a problem shows at start, not at the
    # first client's handshake (e.g. a key too weak for its security level).
    try:
        probe = SSL.Context(SSL.TLS_METHOD)
        probe.use_certificate(chain[0])
        probe.use_privatekey(key)  # type: ignore[arg-type]
        probe.check_privatekey()
    except (SSL.Error, TypeError) as e:
        raise ConfigError(
            f"[tls] certificate: {cert_path}: OpenSSL refuses it: {_openssl_reason(e)}"
        ) from None

    # cryptography objects rather than pyOpenSSL's X509/PKey, which pyOpenSSL
    # 24.3 deprecated; CertificateOptions only hands them on to OpenSSL.SSL.
    return CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=chain[0],  # type: ignore[arg-type]
        extraCertChain=chain[1:],  # type: ignore[arg-type]
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
    )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _alt_names(hostnames: list[str]) -> list[x509.GeneralName]:
    """Subject alternative names for *hostnames*, in order, without duplicates.

    Host names become DNS names as A-labels (RFC 7622 §3.2 domainparts may be
    internationalised); an IP address literal becomes an IP address entry.
    """
    names: list[x509.GeneralName] = []
    for hostname in hostnames:
        text = hostname.strip().rstrip(".")
        if not text:
            continue
        name: x509.GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
        except ValueError:
            try:
                name = x509.DNSName(text.encode("idna").decode("ascii").lower())
            except UnicodeError:
                raise ConfigError(f"[tls] certificate: {hostname!r} is not a valid host name") from None
        if name not in names:
            names.append(name)
    return names


def _write(path: str, data: bytes, mode: int, setting: str) -> None:
    try:
        make_private_folder(os.path.dirname(path))
        with os.fdopen(new_file(path, mode), "wb") as f:  # exactly *mode*, whatever the umask
            f.write(data)
    except OSError as e:
        raise ConfigError(f"[tls] {setting}: cannot write {path}: {e.strerror}") from None


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"[tls] {setting}: cannot read {path}: {e.strerror}") from None


def _openssl_reason(error: Exception) -> str:
    try:
        return str(error.args[0][0][2])
    except (IndexError, TypeError):
        return str(error) or type(error).__name__


@implementer(IOpenSSLContextFactory)
class ReloadableContext:
    """The TLS context every listener uses, replaceable while the server runs.

    Each new handshake asks :meth:`getContext`, so after :meth:`reload` (on
    SIGHUP) new connections get the new certificate and sessions already
    encrypted keep theirs. A reload that fails keeps the old certificate.
    """

    def __init__(self, cert_path: str, key_path: str) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self._options = context_factory(cert_path, key_path)

    def getContext(self) -> SSL.Context:
        return self._options.getContext()

    def reload(self) -> None:
        """Read the files again; raises ConfigError (one line) and keeps the old
        certificate when they are unusable."""
        self._options = context_factory(self.cert_path, self.key_path)
