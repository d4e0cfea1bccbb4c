"""File sharing (XEP-0363) across a cluster: a slot one node signed is taken
by another (a load balancer sends the PUT anywhere), and any node serves the
file: the nodes share the upload folder and the ``[upload] secret``, nothing
about a slot is kept.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.cluster import Cluster
from tests.integration.conftest import PASSWORD
from tests.integration.harness import async_test, login, logout
from tests.integration.test_upload import http


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("cluster")
    nodes = Cluster(folder, upload={"path": str(folder / "shared-uploads")})
    nodes.add_users(PASSWORD, "alice@files.example", "bob@files.example")
    nodes.start()
    yield nodes
    nodes.stop()


@async_test(60)
async def test_a_slot_from_one_node_is_put_on_another_and_read_from_either(cluster):
    node1, node2 = cluster.nodes
    alice = await login(node1, "alice@files.example/desk", PASSWORD)
    alice.register_plugin("xep_0363")
    data = b"shared across nodes " * 100
    iq = await alice.plugin["xep_0363"].request_slot("files.example", "minutes.txt", len(data), "text/plain")
    put, get = iq["http_upload_slot"]["put"]["url"], iq["http_upload_slot"]["get"]["url"]
    one, two = f"127.0.0.1:{node1.http_port}", f"127.0.0.1:{node2.http_port}"
    assert one in put
    status, _, _ = await asyncio.to_thread(http, "PUT", put.replace(one, two), data, {"Content-Type": "text/plain"})
    assert status == 201
    for url in (get, get.replace(one, two)):
        status, _, body = await asyncio.to_thread(http, "GET", url)
        assert (status, body) == (200, data)
    # the same slot on the first node now: used already, whichever node is asked
    status, _, _ = await asyncio.to_thread(http, "PUT", put, data, {"Content-Type": "text/plain"})
    assert status == 409
    bob = await login(node2, "bob@files.example/desk", PASSWORD)
    bob.register_plugin("xep_0363")
    assert (await bob.plugin["xep_0363"].find_upload_service()) is not None
    await logout(alice, bob)
