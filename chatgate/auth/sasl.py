"""Server side of SASL (RFC 6120 §6; RFC 4422): SCRAM-SHA-256, SCRAM-SHA-1, PLAIN.

SCRAM (RFC 5802, RFC 7677) runs through ``scramp``; PLAIN (RFC 4616) checks
the password against the same stored SCRAM keys, off the reactor thread.

No user enumeration: an unknown user gets a salt derived from a server secret
and the configured iteration count, exactly as a real one, and fails at the
same (final) step with the same condition; for PLAIN the same key derivation
runs against throw-away keys. PLAIN also takes a webmail login token in place
of the password (:mod:`chatgate.auth.tokens`), refused when it is older than
``[webmail] token_max_age`` or from a sign-in before the user's credentials
last changed (read from the store, so a change made by any process counts at
once). A user of a domain whose chat is disabled learns
it (``account-disabled``) only after proving the password. Guessing is slowed
and then refused by :mod:`chatgate.auth.throttle`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from scramp import ScramException, ScramMechanism
from twisted.internet import defer, task, threads

from chatgate.auth.credentials import make_credentials, verify_password
from chatgate.auth.names import nodeprep
from chatgate.auth.throttle import LoginThrottle
from chatgate.auth.tokens import TokenError, looks_like_token, verify
from chatgate.mirror import DirectoryMirror
from chatgate.storage.interfaces import Credentials, IDirectory, ScramKeys

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")


class SASLFailure(Exception):
    """An RFC 6120 §6.5 failure condition, with an optional text."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


@dataclass
class Step:
    """What the server answers to one client message: a challenge, or success."""

    data: bytes | None
    done: bool = False


def decode(text: str) -> bytes | None:
    """The bytes of an <auth/> or <response/> text: None for no data, b'' for '='."""
    text = text.strip()
    if not text:
        return None
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SASLFailure("incorrect-encoding") from None


class Authenticator:
    """Knows the mechanisms and checks proofs against the directory."""

    def __init__(self, directory: IDirectory, domains: DirectoryMirror, iterations: int,
                 throttle: LoginThrottle, token_secret: bytes = b"", token_max_age: float | None = None) -> None:
        self.directory = directory
        self.domains = domains
        self.iterations = iterations
        self.throttle = throttle
        self.token_secret = token_secret
        self.token_max_age = token_max_age
        #: told of each login's outcome by the stream: ``login_succeeded(transport, mechanism)``,
        #: ``login_failed(transport, mechanism, condition, text)`` (chatgate.metrics.Metrics), or None
        self.logins: Any = None
        self._secret = b""
        self._decoy: Credentials | None = None

    @defer.inlineCallbacks
    def start(self):
        """Load the secret that fakes salts for unknown users."""
        self._secret = yield self.directory.secret("sasl-decoy")
        self._decoy = make_credentials(os.urandom(16).hex(), self.iterations)

    def mechanisms(self, secure: bool, allow_plain_insecure: bool) -> list[str]:
        plain = ["PLAIN"] if secure or allow_plain_insecure else []
        return [*SCRAM_MECHANISMS, *plain]

    def exchange(self, mechanism: str, domain: str, secure: bool, allow_plain_insecure: bool,
                 address: str) -> Exchange:
        """A new authentication attempt with *mechanism* for a user of *domain*
        from the IP *address*."""
        if mechanism not in self.mechanisms(secure, allow_plain_insecure):
            if mechanism == "PLAIN":
                raise SASLFailure("encryption-required")
            raise SASLFailure("invalid-mechanism")
        if mechanism == "PLAIN":
            return PlainExchange(self, domain, address)
        return ScramExchange(self, domain, address, mechanism)

    # -- helpers for exchanges

    def decoy_keys(self, mechanism: str, domain: str, localpart: str) -> ScramKeys:
        """Keys for an unknown user: a stable salt that reveals nothing."""
        digest = hashlib.sha256 if mechanism == "SCRAM-SHA-256" else hashlib.sha1
        salt = hmac.new(self._secret, f"{mechanism}\0{localpart}@{domain}".encode(), hashlib.sha256).digest()[:16]
        size = digest().digest_size
        return ScramKeys(salt, os.urandom(size), os.urandom(size), self.iterations)

    def prepare_user(self, name: str, domain: str) -> str:
        """The localpart a client names, as a bare localpart or a full address."""
        if "@" in name:
            name, _, host = name.rpartition("@")
            if host.lower() != domain:
                raise SASLFailure("not-authorized")
        try:
            localpart = nodeprep.prepare(name)
        except UnicodeError:
            raise SASLFailure("not-authorized") from None
        if not localpart or len(localpart.encode()) > 1023:
            raise SASLFailure("not-authorized")
        return localpart

    def check_enabled(self, domain: str) -> None:
        if not self.domains.chat_enabled(domain):
            raise SASLFailure("account-disabled", f"Chat is disabled for {domain}")

    @defer.inlineCallbacks
    def token_valid(self, token: str, domain: str, localpart: str):
        """Whether *token* is a webmail login token (see auth/tokens.py) for
        this very user, from a sign-in after their credentials were last set
        and within ``token_max_age`` (Deferred[bool])."""
        changed = yield self.directory.credentials_changed(domain, localpart)
        if changed is None:  # no such user (any more)
            return False
        try:
            verify(self.token_secret, token, f"{localpart}@{domain}", max_age=self.token_max_age, changed=changed)
        except TokenError:
            return False
        return True

    def check_throttle(self, account: str, address: str) -> None:
        if self.throttle.locked(account, address):
            raise SASLFailure("temporary-auth-failure", "Too many failed logins; try again later")

    def pause(self, account: str, address: str) -> defer.Deferred[None]:
        """Wait as long as earlier failures from *address* ask, before answering
        (not at all, not even a turn of the reactor, when there were none)."""
        delay = self.throttle.delay(account, address)
        if delay <= 0:
            return defer.succeed(None)
        return task.deferLater(self.throttle.clock, delay)

    def judged(self, account: str, address: str, valid: bool) -> None:
        if valid:
            self.throttle.succeeded(account, address)
        else:
            self.throttle.failed(account, address)


class Exchange:
    """One authentication attempt; ``localpart`` is set once it succeeded."""

    mechanism = ""

    def __init__(self, authenticator: Authenticator, domain: str, address: str) -> None:
        self.authenticator = authenticator
        self.domain = domain
        self.address = address
        self.localpart: str | None = None

    def step(self, data: bytes | None) -> defer.Deferred[Step]:
        raise NotImplementedError


class PlainExchange(Exchange):
    """RFC 4616: authzid NUL authcid NUL password, in one message."""

    mechanism = "PLAIN"

    @defer.inlineCallbacks
    def step(self, data):
        if data is None:
            return Step(b"")  # empty challenge: the client sends its response next
        try:
            authzid, authcid, password = data.decode("utf-8").split("\0")
        except (UnicodeDecodeError, ValueError):
            raise SASLFailure("malformed-request") from None
        a = self.authenticator
        localpart = a.prepare_user(authcid, self.domain)
        if authzid and authzid.lower() != f"{localpart}@{self.domain}":
            raise SASLFailure("invalid-authzid")
        account = f"{localpart}@{self.domain}"
        a.check_throttle(account, self.address)
        yield a.pause(account, self.address)
        if looks_like_token(password):
            valid = yield a.token_valid(password, self.domain, localpart)
        else:
            credentials = yield a.directory.credentials(self.domain, localpart)
            valid = yield threads.deferToThread(verify_password, credentials or a._decoy, password)
            valid = bool(valid and credentials)
        a.judged(account, self.address, valid)
        if not valid:
            raise SASLFailure("not-authorized")
        a.check_enabled(self.domain)
        self.localpart = localpart
        return Step(None, done=True)


class ScramExchange(Exchange):
    """RFC 5802: client-first, server-first, client-final, server-final."""

    def __init__(self, authenticator: Authenticator, domain: str, address: str, mechanism: str) -> None:
        super().__init__(authenticator, domain, address)
        self.mechanism = mechanism
        self._server = None
        self._candidate: str | None = None
        self._known = False

    def step(self, data):
        if data is None:
            if self._server is None:
                return defer.succeed(Step(b""))
            return defer.fail(SASLFailure("malformed-request"))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return defer.fail(SASLFailure("malformed-request"))
        if self._server is None:
            return self._client_first(text)
        d = self.authenticator.pause(f"{self._candidate}@{self.domain}", self.address)
        d.addCallback(lambda _: self._client_final(text))
        return d

    def _client_first(self, text: str) -> defer.Deferred[Step]:
        a = self.authenticator
        try:
            username, authzid = _scram_names(text)
            localpart = a.prepare_user(username, self.domain)
            if authzid and authzid.lower() != f"{localpart}@{self.domain}":
                raise SASLFailure("invalid-authzid")
            a.check_throttle(f"{localpart}@{self.domain}", self.address)
        except SASLFailure:
            return defer.fail()
        d = a.directory.credentials(self.domain, localpart)
        d.addCallback(self._server_first, text, localpart)
        return d

    def _server_first(self, credentials: Credentials | None, text: str, localpart: str) -> Step:
        a = self.authenticator
        keys = (credentials or {}).get(self.mechanism)
        self._known = keys is not None
        if keys is None:
            keys = a.decoy_keys(self.mechanism, self.domain, localpart)
        self._candidate = localpart
        auth_info = (keys.salt, keys.stored_key, keys.server_key, keys.iterations)
        self._server = ScramMechanism(self.mechanism).make_server(lambda _name: auth_info)
        try:
            self._server.set_client_first(text)
            return Step(self._server.get_server_first().encode())
        except ScramException:
            raise SASLFailure("malformed-request") from None

    def _client_final(self, text: str) -> Step:
        account = f"{self._candidate}@{self.domain}"
        try:
            self._server.set_client_final(text)
            final = self._server.get_server_final()
            valid = self._known  # decoy keys are random: a proof against them cannot hold
        except ScramException:
            valid = False
        self.authenticator.judged(account, self.address, valid)
        if not valid:
            raise SASLFailure("not-authorized")
        self.authenticator.check_enabled(self.domain)
        self.localpart = self._candidate
        return Step(final.encode(), done=True)


def _scram_names(client_first: str) -> tuple[str, str]:
    """(username, authzid) from a SCRAM client-first message (RFC 5802 §5.1)."""
    parts = client_first.split(",", 3)
    if len(parts) < 4 or not parts[2].startswith("n="):
        raise SASLFailure("malformed-request")
    authzid = parts[1][2:] if parts[1].startswith("a=") else ""

    def unescape(value: str) -> str:
        return value.replace("=2C", ",").replace("=3D", "=")

    return unescape(parts[2][2:]), unescape(authzid)
