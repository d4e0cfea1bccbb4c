"""Stream management (XEP-0198) resumption across the nodes of a cluster: a
phone (slixmpp with xep_0198) whose network changes comes back through a
load balancer to another node, and resumes there; then to the first node
again. Its contacts, on both nodes, never see it go offline, and it gets
every message once.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.cluster import Cluster
from tests.integration.conftest import PASSWORD
from tests.integration.harness import async_test, login, logout
from tests.integration.test_stream_management import (
    Network,
    phone_login,
    reconnect,
    unavailable_from,
    wait_bodies,
)

USERS = [f"{u}@sm.example" for u in ("alice", "bob", "carol")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    nodes.add_users(PASSWORD, *USERS)
    nodes.start()
    yield nodes
    nodes.stop()


@async_test(120)
async def test_a_phone_resumes_on_another_node_and_back(cluster):
    node1, node2 = cluster.nodes
    network = await Network(node1.port).start()
    phone = await phone_login(node1, network, "alice@sm.example/phone")
    bob = await login(node2, "bob@sm.example/desk", PASSWORD)
    carol = await login(node1, "carol@sm.example/desk", PASSWORD)
    for watcher in (bob, carol):
        await watcher.wait_presence(lambda p: str(p["from"]) == "alice@sm.example/phone")
    bob.send_message(mto="alice@sm.example", mbody="one", mtype="chat")
    await wait_bodies(phone, ["one"])

    # the phone changes networks; the balancer sends it to the other node
    network.swallow()
    bob.send_message(mto="alice@sm.example", mbody="two", mtype="chat")
    carol.send_message(mto="alice@sm.example/phone", mbody="three", mtype="chat")
    await asyncio.sleep(0.5)
    network.port_to = node2.port
    assert await reconnect(phone, network) == "resumed"
    await wait_bodies(phone, ["one", "two", "three"], ordered=False)  # two senders, two nodes
    assert "is resumed on node node2" in node1.log_text()

    # the session lives on node2 now: both ways, from both nodes
    phone.send_message(mto="bob@sm.example/desk", mbody="back", mtype="chat")
    assert (await bob.next_message())["body"] == "back"
    carol.send_message(mto="alice@sm.example/phone", mbody="four", mtype="chat")
    await wait_bodies(phone, ["one", "two", "three", "four"], ordered=False)

    # and once more, back to the first node (which made the id, and knows where it went)
    network.cut()
    await asyncio.sleep(0.3)
    bob.send_message(mto="alice@sm.example", mbody="five", mtype="chat")
    await asyncio.sleep(0.3)
    network.port_to = node1.port
    assert await reconnect(phone, network) == "resumed"
    carol.send_message(mto="alice@sm.example/phone", mbody="six", mtype="chat")
    await wait_bodies(phone, ["one", "two", "three", "four", "five", "six"], ordered=False)

    for watcher in (bob, carol):
        assert unavailable_from(watcher, "alice@sm.example/phone") == []
    await logout(phone, bob, carol)
    await network.close()
