"""File sharing (XEP-0363) as clients meet it: slixmpp's xep_0363 plugin finds
the service, asks for a slot and PUTs the file (aiohttp); another user of the
domain fetches it over HTTP. Then the refusals: too large, over the daily
quota, another domain, and every way a PUT can be wrong; and what a browser
is told about an upload that could be taken for a page.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout

NS = "urn:xmpp:http:upload:0"
MAX = 100_000
QUOTA = 250_000
#: a webmail origin allowed to call the listener from the browser
PANE = "https://mail.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("chatgate"), upload={"max_file_size": MAX, "daily_quota": QUOTA},
                 http={"cors_origins": PANE})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def http(method: str, url: str, data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


async def uploader(server: Server, jid: str):
    client = await login(server, jid, PASSWORD)
    client.register_plugin("xep_0363")
    return client


async def slot(client, name: str, size: int, content_type: str = "application/octet-stream") -> tuple[str, str]:
    iq = await client.plugin["xep_0363"].request_slot(client.boundjid.domain, name, size, content_type)
    return iq["http_upload_slot"]["put"]["url"], iq["http_upload_slot"]["get"]["url"]


def tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@async_test(60)
async def test_a_file_goes_up_with_slixmpp_and_down_to_a_colleague(server):
    alice = await uploader(server, "alice@example.com/desk")
    service = await alice.plugin["xep_0363"].find_upload_service()
    assert service is not None and str(service["from"]) == "example.com"
    content = bytes(range(256)) * 300  # 76,800 bytes
    path = server.folder / "report.pdf"
    path.write_bytes(content)
    url = await alice.plugin["xep_0363"].upload_file(str(path), content_type="application/pdf")
    assert url.startswith(f"http://127.0.0.1:{server.http_port}/upload/example.com/")
    status, headers, body = await asyncio.to_thread(http, "GET", url)
    assert status == 200 and body == content
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith('attachment; filename="report.pdf"')
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    # an image is shown inline, with its type
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    (server.folder / "cat.png").write_bytes(png)
    image = await alice.plugin["xep_0363"].upload_file(str(server.folder / "cat.png"), content_type="image/png")
    status, headers, body = await asyncio.to_thread(http, "GET", image)
    assert (status, headers["content-type"], body) == (200, "image/png", png)
    assert headers["content-disposition"].startswith("inline")
    # no listing, no guessing
    for probe in (url.rsplit("/", 2)[0], url.rsplit("/", 1)[0] + "/other.pdf", url[:-30] + "A" * 22 + "/x"):
        assert (await asyncio.to_thread(http, "GET", probe))[0] == 404, probe
    await logout(alice)


@async_test(60)
async def test_html_and_svg_are_downloads_never_pages(server):
    alice = await uploader(server, "alice@example.com/pages")
    for name, kind, data in (("x.html", "text/html", b"<script>alert(1)</script>"),
                             ("x.svg", "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>")):
        put, get = await slot(alice, name, len(data), kind)
        status, _, _ = await asyncio.to_thread(http, "PUT", put, data, {"Content-Type": kind})
        assert status == 201
        status, headers, body = await asyncio.to_thread(http, "GET", get)
        assert body == data and headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"].startswith("attachment")
    await logout(alice)


@async_test(60)
async def test_too_large_over_quota_and_other_domains_are_refused(server):
    bob = await uploader(server, "bob@example.com/desk")
    with pytest.raises(IqError) as refused:
        await slot(bob, "big.bin", MAX + 1)
    error = refused.value.iq["error"]
    assert error["condition"] == "not-acceptable"
    assert f"<max-file-size>{MAX}</max-file-size>" in str(refused.value.iq)
    # the quota: what was stored in the last day counts
    for n in range(2):
        put, _ = await slot(bob, f"part{n}.bin", MAX)
        assert (await asyncio.to_thread(http, "PUT", put, b"b" * MAX,
                                        {"Content-Type": "application/octet-stream"}))[0] == 201
    with pytest.raises(IqError) as refused:
        await slot(bob, "one-more.bin", MAX)
    assert refused.value.iq["error"]["condition"] == "resource-constraint"
    assert f"<retry xmlns='{NS}'" in str(refused.value.iq).replace('"', "'")
    dave = await uploader(server, "dave@other.org/desk")
    with pytest.raises(IqError) as sealed:
        await dave.plugin["xep_0363"].request_slot("example.com", "x.bin", 10, "application/octet-stream")
    assert sealed.value.iq["error"]["condition"] in ("service-unavailable", "item-not-found", "not-allowed")
    await logout(bob, dave)


@async_test(60)
async def test_every_wrong_put_is_refused_and_stores_nothing(server):
    carol = await uploader(server, "carol@example.com/desk")
    data = b"c" * 1000
    put, get = await slot(carol, "notes.txt", len(data), "text/plain")
    plain = {"Content-Type": "text/plain"}
    cases = [
        (put.split("?")[0], data, plain, 403),  # no slot at all
        (tamper(put, s="999"), data[:999], plain, 403),  # the size changed: the signature no longer holds
        (tamper(put, sig="0" * 64), data, plain, 403),  # a forged signature
        (tamper(put, e="1"), data, plain, 403),  # expiry moved
        (put, data[:500], plain, 400),  # shorter than the slot
        (put, data + b"x", plain, 413),  # longer than the slot (not kept: the slot's size is the limit)
        (put, data, {"Content-Type": "text/html"}, 415),  # another type
        (put, b"x" * (MAX + 10), plain, 413),  # past the largest file
    ]
    for url, body, headers, expected in cases:
        status, _, _ = await asyncio.to_thread(http, "PUT", url, body, headers)
        assert status == expected, (url, status)
        assert (await asyncio.to_thread(http, "GET", get))[0] == 404
    assert (await asyncio.to_thread(http, "PUT", put, data, plain))[0] == 201
    assert (await asyncio.to_thread(http, "PUT", put, data, plain))[0] == 409  # once only
    assert (await asyncio.to_thread(http, "GET", get))[2] == data
    await logout(carol)


@async_test(60)
async def test_head_names_and_the_pane_preflight(server):
    alice = await uploader(server, "alice@example.com/names")
    data = b"%PDF-1.4 minutes"
    put, get = await slot(alice, "Protokoll März.pdf", len(data), "application/pdf")
    assert "Protokoll%20M%C3%A4rz.pdf" in get
    # the pane's PUT from its webmail origin: the preflight first, as a browser sends it
    status, headers, _ = await asyncio.to_thread(http, "OPTIONS", put, None, {
        "Origin": PANE, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type"})
    assert status == 204 and headers["access-control-allow-origin"] == PANE
    assert "PUT" in headers["access-control-allow-methods"]
    assert "content-type" in headers["access-control-allow-headers"].lower()
    status, headers, _ = await asyncio.to_thread(http, "PUT", put, data,
                                                 {"Content-Type": "application/pdf", "Origin": PANE})
    assert status == 201 and headers["access-control-allow-origin"] == PANE
    status, headers, _ = await asyncio.to_thread(http, "OPTIONS", put, None, {
        "Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"})
    assert "access-control-allow-origin" not in headers
    status, headers, body = await asyncio.to_thread(http, "HEAD", get)
    assert (status, body, headers["content-length"]) == (200, b"", str(len(data)))
    # RFC 6266: an ASCII stand-in and the exact name as UTF-8
    assert headers["content-disposition"] == (
        "attachment; filename=\"Protokoll M_rz.pdf\"; filename*=UTF-8''Protokoll%20M%C3%A4rz.pdf")
    assert headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert "max-age" in headers["cache-control"]
    await logout(alice)


@async_test(60)
async def test_a_slot_used_after_its_lifetime_is_refused(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("short-slots"), upload={"slot_lifetime": 1})
    provision(srv)
    srv.start()
    try:
        alice = await uploader(srv, "alice@example.com/late")
        put, get = await slot(alice, "late.txt", 4, "text/plain")
        await asyncio.sleep(2.1)
        status, _, body = await asyncio.to_thread(http, "PUT", put, b"late", {"Content-Type": "text/plain"})
        assert status == 403 and b"expired" in body
        assert (await asyncio.to_thread(http, "GET", get))[0] == 404
        await logout(alice)
    finally:
        srv.stop()
