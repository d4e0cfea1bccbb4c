"""SCRAM credentials (RFC 5802 §3, RFC 7677): what is kept instead of a password.

One password gives keys for each SCRAM mechanism chatgate offers, so a client
may pick either. SASL PLAIN is verified against the same keys: the password is
salted and hashed again and the result compared with the stored key, so no
password is ever stored.
"""

from __future__ import annotations

import hmac

from scramp import ScramException, ScramMechanism

from chatgate.storage.interfaces import Credentials, ScramKeys

#: strongest first: verify_password uses the first one a user has
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
#: scramp refuses fewer (RFC 7677 §4 recommends at least 4096)
MIN_ITERATIONS = 4096


def make_credentials(password: str, iterations: int) -> Credentials:
    """Salt and hash *password* for every mechanism in :data:`MECHANISMS`.

    ValueError (one line) if the password is not valid SASLprep text or
    *iterations* is below :data:`MIN_ITERATIONS`.
    """
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"SCRAM iterations must be at least {MIN_ITERATIONS}, not {iterations}")
    if not password:
        raise ValueError("the password is empty")
    credentials: Credentials = {}
    for name in MECHANISMS:
        try:
            salt, stored_key, server_key, count = ScramMechanism(name).make_auth_info(
                password, iteration_count=iterations
            )
        except ScramException:
            raise ValueError("the password contains characters SASLprep (RFC 4013) forbids") from None
        credentials[name] = ScramKeys(salt, stored_key, server_key, count)
    return credentials


def verify_password(credentials: Credentials, password: str) -> bool:
    """Whether *password* matches the stored keys (for SASL PLAIN)."""
    for name in MECHANISMS:
        keys = credentials.get(name)
        if keys is None:
            continue
        try:
            _, stored_key, _, _ = ScramMechanism(name).make_auth_info(
                password, iteration_count=keys.iterations, salt=keys.salt
            )
        except ScramException:
            return False
        return hmac.compare_digest(stored_key, keys.stored_key)
    return False
