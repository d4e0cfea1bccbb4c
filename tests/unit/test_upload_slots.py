"""Upload slots (XEP-0363) and the folder file store."""

from __future__ import annotations

import io
import os
import stat

import pytest

from chatgate.auth import slots
from chatgate.features.upload import clean_name, clean_type
from chatgate.storage.files import DAY, FolderFileStore, StoredFile

KEY = b"k" * 32


def a_slot(**changes) -> slots.Slot:
    fields = dict(domain="example.com", file_id=slots.new_file_id(), filename="a b.txt", localpart="alice",
                  size=10, content_type="text/plain", expires=2_000_000_000)
    fields.update(changes)
    return slots.Slot(**fields)


def query_of(slot: slots.Slot, key: bytes = KEY) -> dict[str, str]:
    from urllib.parse import parse_qsl
    return dict(parse_qsl(slots.put_query(key, slot)))


def test_a_slot_verifies_and_any_change_breaks_it():
    slot = a_slot()
    query = query_of(slot)
    assert slots.verify(KEY, slot.domain, slot.file_id, slot.filename, query) == slot
    assert slots.verify(b"x" * 32, slot.domain, slot.file_id, slot.filename, query) is None
    assert slots.verify(KEY, "other.org", slot.file_id, slot.filename, query) is None
    assert slots.verify(KEY, slot.domain, slots.new_file_id(), slot.filename, query) is None
    assert slots.verify(KEY, slot.domain, slot.file_id, "evil.html", query) is None
    for key, value in (("s", "11"), ("t", "text/html"), ("u", "bob"), ("e", "2000000001")):
        assert slots.verify(KEY, slot.domain, slot.file_id, slot.filename, {**query, key: value}) is None
    assert slots.verify(KEY, slot.domain, "../../etc", slot.filename, query) is None
    assert len(slot.file_id) == 22 and slot.path == f"example.com/{slot.file_id}/a%20b.txt"


def test_names_and_types_are_cleaned():
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\a\\report.pdf") == "report.pdf"
    assert clean_name("a\x00b\u202ec.txt") == "abc.txt"
    assert clean_name("..") is None and clean_name("") is None
    assert len(clean_name("é" * 500).encode()) <= 200
    assert clean_type("image/PNG") == "image/png"
    assert clean_type("text/html\r\nX-Evil: 1") == "application/octet-stream"
    assert clean_type("nonsense") == "application/octet-stream"


@pytest.fixture
def store(tmp_path):
    # the work of each method, called directly (its public form runs it in Twisted's thread pool)
    return FolderFileStore(str(tmp_path / "uploads"))


def test_the_folder_store_keeps_files_private_whole_and_once(store, tmp_path):
    os.makedirs(store.path, 0o700)
    meta = StoredFile("alice", "a.txt", 5, "text/plain", 1000.0)
    assert store._put("example.com", "F" * 22, io.BytesIO(b"hello"), meta)
    assert not store._put("example.com", "F" * 22, io.BytesIO(b"again"), meta)
    found, path = store._get("example.com", "F" * 22)
    assert found == meta and open(path, "rb").read() == b"hello"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert store._get("example.com", "G" * 22) is None
    assert not [n for n in os.listdir(os.path.dirname(os.path.dirname(path))) if n.endswith(".part")]


def test_the_quota_counts_the_last_day_only(store):
    os.makedirs(store.path, 0o700)
    for n, at in enumerate((1000.0, 1000.0 + DAY / 2, 1000.0 + DAY - 1)):
        store._put("example.com", f"{n}" * 22, io.BytesIO(b"x" * 10), StoredFile("bob", "f", 10, "t/t", at))
    assert store._usage("example.com", "bob", 1000.0 + DAY - 1) == (30, 1000.0 + DAY)
    assert store._usage("example.com", "bob", 1000.0 + DAY + 1) == (20, 1000.0 + DAY / 2 + DAY)
    assert store._usage("example.com", "carol", 1000.0) == (0, None)


def test_expiry_removes_old_files_in_batches(store):
    os.makedirs(store.path, 0o700)
    for n in range(5):
        store._put("example.com", f"{n}" * 22, io.BytesIO(b"x"), StoredFile("bob", "f", 1, "t/t", 0.0))
    now = os.stat(store.path).st_mtime
    assert store._expire(now - 3600, 10) == 0  # all of them newer
    assert store._expire(now + 10, 3) == 3
    assert store._expire(now + 10, 3) == 2
    assert not os.listdir(os.path.join(store.path, "files", "example.com"))


def test_erasure_removes_one_users_files_and_ledger(store):
    os.makedirs(store.path, 0o700)
    for n, owner in enumerate(("bob", "carol", "bob")):
        store._put("example.com", f"{n}" * 22, io.BytesIO(b"x"), StoredFile(owner, "f", 1, "t/t", 1000.0))
    assert store._erase("example.com", "bob") == 2
    assert store._get("example.com", "1" * 22) is not None  # carol's stays
    assert store._get("example.com", "0" * 22) is None
    assert store._usage("example.com", "bob", 1000.0) == (0, None)
    assert store._usage("example.com", "carol", 1000.0)[0] == 1
    assert store._erase("example.com", "bob") == 0


# -- the PUT's checks before and after its body (chatgate.web.upload)


def a_resource(clock):
    from chatgate.config import Settings
    from chatgate.web.upload import UploadResource
    return UploadResource(Settings(), FolderFileStore("/nonexistent"), KEY, clock)


def put_request(slot: slots.Slot, body: bytes, content_type: str = "text/plain"):
    from twisted.web.test.requesthelper import DummyRequest
    request = DummyRequest([])
    request.method = b"PUT"
    request.uri = f"/upload/{slot.path}?{slots.put_query(KEY, slot)}".encode()
    request.content = io.BytesIO(body)
    request.requestHeaders.setRawHeaders(b"content-length", [str(len(body)).encode()])
    request.requestHeaders.setRawHeaders(b"content-type", [content_type.encode()])
    return request


def test_the_body_limit_is_the_slot_size_and_nothing_without_a_valid_slot():
    from twisted.internet.task import Clock
    clock = Clock()
    clock.advance(1000)
    upload = a_resource(clock)
    slot = a_slot(expires=1060)
    raw = put_request(slot, b"").uri
    assert upload.body_limit(put_request(slot, b""), raw) == slot.size
    assert upload.body_limit(put_request(slot, b""), raw.replace(b"s=10", b"s=99")) == 0  # tampered
    assert upload.body_limit(put_request(slot, b""), raw[:raw.index(b"?")]) == 0  # no slot
    assert upload.body_limit(put_request(slot, b""), b"/elsewhere/" + raw[len(b"/upload/"):]) == 0
    clock.advance(61)
    assert upload.body_limit(put_request(slot, b""), raw) == 0  # expired before the upload began


def test_a_slot_is_checked_for_expiry_when_the_upload_begins():
    from twisted.internet.task import Clock
    clock = Clock()
    clock.advance(1000)
    upload = a_resource(clock)
    slot = a_slot(expires=1060)
    began_in_time = put_request(slot, b"x" * 10, content_type="text/html")
    upload.body_limit(began_in_time, began_in_time.uri)
    clock.advance(120)  # the body took two minutes: the slot expired meanwhile
    # past the expiry check (refused for its type, the next check), not for the time
    assert upload.render_PUT(began_in_time) and began_in_time.responseCode == 415
    late = put_request(slot, b"x" * 10)
    upload.body_limit(late, late.uri)
    assert b"expired" in upload.render_PUT(late) and late.responseCode == 403
    # in time, but longer than the slot: the site kept none of it
    fresh = a_slot(expires=2000)
    longer = put_request(fresh, b"")
    longer.requestHeaders.setRawHeaders(b"content-length", [b"11"])
    longer.oversized = True
    assert upload.body_limit(longer, longer.uri) == 10
    upload.render_PUT(longer)
    assert longer.responseCode == 413


def test_uploads_ending_together_all_count(store):
    from concurrent.futures import ThreadPoolExecutor
    os.makedirs(store.path, 0o700)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: store._count("example.com", "eve", 1, 5000.0 + n), range(64)))
    assert store._usage("example.com", "eve", 5100.0)[0] == 64
    lock = os.path.join(store.path, "usage", "example.com", "eve.lock")
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
