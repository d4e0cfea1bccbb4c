"""Upload slots (XEP-0363) signed so that any node of a cluster accepts them.

A slot is a URL: ``<base>/<domain>/<file id>/<file name>`` to GET, the same
with a query to PUT: who may upload (``u``, the localpart), how many bytes
(``s``), of which type (``t``), until when (``e``, Unix time) and ``sig``, an
HMAC-SHA256 over all of it and the path under the ``[upload] secret``.
Nothing about a slot is stored: a node that never saw the request checks
the PUT from the URL alone. The file id holds 128 random bits: the GET URL is
the capability to read the file, handed only to its uploader.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from chatgate.config import Settings
from chatgate.private_files import make_private_folder, new_file

#: a file id: 22 URL-safe characters (16 random bytes)
FILE_ID = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True)
class Slot:
    domain: str
    file_id: str
    filename: str
    localpart: str
    size: int
    content_type: str
    expires: int

    @property
    def path(self) -> str:
        """``<domain>/<file id>/<file name>``, percent-encoded."""
        return f"{quote(self.domain, safe='')}/{self.file_id}/{quote(self.filename, safe='')}"


def new_file_id() -> str:
    return secrets.token_urlsafe(16)


def _signature(key: bytes, slot: Slot) -> str:
    text = "\n".join(("put", slot.domain, slot.file_id, slot.filename, slot.localpart, str(slot.size),
                      slot.content_type, str(slot.expires)))
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def put_query(key: bytes, slot: Slot) -> str:
    """The query string of *slot*'s PUT URL."""
    return urlencode({"u": slot.localpart, "s": slot.size, "t": slot.content_type, "e": slot.expires,
                      "sig": _signature(key, slot)})


def verify(key: bytes, domain: str, file_id: str, filename: str, query: dict[str, str]) -> Slot | None:
    """The slot a PUT URL names, if its signature holds (expiry is the caller's to check)."""
    try:
        slot = Slot(domain, file_id, filename, query["u"], int(query["s"]), query["t"], int(query["e"]))
    except (KeyError, ValueError):
        return None
    if not FILE_ID.fullmatch(file_id) or not hmac.compare_digest(_signature(key, slot), query.get("sig", "")):
        return None
    return slot


def upload_key(settings: Settings) -> bytes:
    """``[upload] secret``, or the key kept beside the upload folder (made at the first start)."""
    if settings.upload.secret:
        return settings.upload.secret.encode()
    path = settings.path(settings.upload.path).rstrip("/") + ".key"
    make_private_folder(os.path.dirname(path))
    try:
        with os.fdopen(new_file(path), "w") as out:
            out.write(secrets.token_urlsafe(32))
    except FileExistsError:
        pass
    with open(path) as f:
        return f.read().strip().encode()
