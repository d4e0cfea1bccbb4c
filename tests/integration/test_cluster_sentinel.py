"""Two chatgate nodes that reach Redis only through Sentinel, with nothing on a
shared file: the directory (``[storage] backend = redis``), the archive and the
offline messages all on Redis, a master, its replica and one sentinel (quorum
1, quick to fail over), ``[cluster] redis_sentinels`` naming the sentinel.

Users on both nodes chat; then the master is killed (``SIGKILL``) while they
keep writing, across nodes and on the same node, one message per conversation
every 100 ms: every message is received exactly once or its sender gets an
error, none silently lost; once the sentinel has promoted the replica, presence
and chat across nodes work again without a node being restarted.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from tests.integration.cluster import Cluster
from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, LoginFailed, async_test, login, logout
from tests.integration.test_cluster import ARRIVES, Inbox, available, received, until

#: how long the users keep writing, one message per conversation every TICK seconds
CHAT_FOR, TICK = 10.0, 0.1
#: the master dies this long after they started
KILL_AFTER = 1.5


def ask(port: int, *command: str, timeout: float = 2) -> Any:
    """One command to the Redis server or sentinel on *port* (RESP2 replies: str, int, list, or an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(b"".join([b"*%d\r\n" % len(command)]
                              + [b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in command]))
        stream = conn.makefile("rb")

        def reply() -> Any:
            line = stream.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:].decode()
            if kind == b"+":
                return rest
            if kind == b"-":
                return RuntimeError(rest)
            if kind == b":":
                return int(rest)
            if kind == b"$":
                return None if rest == "-1" else stream.read(int(rest) + 2)[:-2].decode()
            if kind == b"*":
                return None if rest == "-1" else [reply() for _ in range(int(rest))]
            raise AssertionError(f"not a RESP reply: {line!r}")

        return reply()


def master_port(cluster: Cluster) -> int | None:
    """The master's port as the sentinel names it now."""
    assert cluster.sentinel is not None
    try:
        answer = ask(cluster.sentinel.port, "SENTINEL", "get-master-addr-by-name", "mymaster")
    except OSError:
        return None
    return int(answer[1]) if isinstance(answer, list) else None


def sentinel_ready(cluster: Cluster) -> bool:
    """The sentinel knows the replica, and the replica is in sync: a failover can happen."""
    assert cluster.sentinel is not None and cluster.replica is not None
    try:
        replicas = ask(cluster.sentinel.port, "SENTINEL", "replicas", "mymaster")
        link = ask(cluster.replica.port, "INFO", "replication")
    except OSError:
        return False
    fields = [dict(zip(r[::2], r[1::2], strict=True)) for r in replicas or []]
    return "master_link_status:up" in link and any(
        f["port"] == str(cluster.replica.port) and "s_down" not in f["flags"] for f in fields)


async def wait_for(check, timeout: float, what: str) -> float:
    """Poll *check* (a blocking function, run in a thread) every 0.1 s; seconds it took, or fail naming *what*."""
    started = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


# [cluster] forward_timeout: how long a cross-node message waits for Redis before its sender gets an error.
# 1 s is shorter than the failover (some messages bounce, some wait and are delivered); 10 s (the default)
# is longer (every one waits and is delivered).
@pytest.mark.parametrize("forward_timeout", [1, 10], ids=["some-bounce", "all-wait"])
@async_test(timeout=90)
async def test_a_sentinel_failover_while_users_chat_loses_no_message_and_the_cluster_carries_on(tmp_path,
                                                                                               forward_timeout):
    d = "failover.example"
    # heartbeats at the defaults' ratio, dead_after longer than a failover (about 1.6 s here): a
    # failover is not a node's death. With the harness's 1 s, every node took the others for dead
    # during it and delivered their unread inbox entries again, some of them read already on the
    # old master whose deletions never reached the replica: delivered twice (at least once holds)
    cluster = Cluster(tmp_path, directory="redis", sentinel=True,
                      cluster={"forward_timeout": forward_timeout, "heartbeat": 0.5, "dead_after": 4})
    replica = cluster.replica
    assert replica is not None
    try:
        # the directory lives on Redis: the servers first, then the accounts, then the nodes
        await asyncio.to_thread(cluster.start_redis)
        await wait_for(lambda: sentinel_ready(cluster), 15, "the sentinel sees the replica in sync")
        await asyncio.to_thread(cluster.add_users, PASSWORD, *(f"{u}@{d}" for u in
                                                                 ("alice", "bob", "carol", "dave", "erin")))
        await asyncio.to_thread(cluster.start)
        assert not cluster.store.exists(), "a node or chatgate-admin made a directory file"
        node1, node2 = cluster.nodes
        alice = await login(node1, f"alice@{d}/desk", PASSWORD)
        carol = await login(node1, f"carol@{d}/desk", PASSWORD)
        bob = await login(node2, f"bob@{d}/laptop", PASSWORD)
        dave = await login(node2, f"dave@{d}/laptop", PASSWORD)
        inbox = {client: Inbox(client) for client in (alice, bob, carol, dave)}
        await alice.wait_presence(available(f"bob@{d}/laptop"), ARRIVES)
        await bob.wait_presence(available(f"alice@{d}/desk"), ARRIVES)
        # chat works, across nodes and on each node
        for sender, peer in ((alice, bob), (bob, alice), (alice, carol), (bob, dave)):
            sender.send_message(mto=peer.boundjid.bare, mbody=f"hello {peer.boundjid.user}", mtype="chat")
            await received(peer, f"hello {peer.boundjid.user}", sender.boundjid.full)

        # the conversations: two across nodes (each way), one on each node
        talks: list[tuple[str, Client, Client]] = [
            ("across 1>2", alice, bob), ("across 2>1", bob, alice), ("node1", alice, carol), ("node2", bob, dave)]
        sent: list[tuple[str, str, Client, Client]] = []  # (id, body, sender, recipient)
        killed_at: float | None = None
        promotion: asyncio.Task[float] | None = None
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < CHAT_FOR:
            if killed_at is None and time.monotonic() - started >= KILL_AFTER:
                assert cluster.redis.process is not None
                cluster.redis.process.kill()  # SIGKILL: no goodbye; the sentinel finds it gone
                killed_at = time.monotonic()
                promotion = asyncio.create_task(wait_for(lambda: master_port(cluster) == replica.port,
                                                         20, "the sentinel promotes the replica"))
            for name, sender, peer in talks:
                id_, text = f"{name}-{n}", f"{name} message {n}"
                stanza = sender.make_message(mto=peer.boundjid.bare, mbody=text, mtype="chat")
                stanza["id"] = id_
                stanza.send()
                sent.append((id_, text, sender, peer))
            n += 1
            await asyncio.sleep(TICK)
        assert killed_at is not None and promotion is not None
        promoted = await promotion

        # every message: received once, or bounced to its sender; never neither, never both, never twice
        def settled() -> bool:
            return all(inbox[peer].count(text) or inbox[sender].bounced(id_) for id_, text, sender, peer in sent)

        await until(settled, forward_timeout + 15)
        await asyncio.sleep(1)  # a late second copy, or a copy of a bounced one, shows now
        problems: list[str] = []
        tally: dict[str, list[int]] = {name: [0, 0] for name, _, _ in talks}  # delivered, bounced
        for id_, text, sender, peer in sent:
            copies, bounced = inbox[peer].count(text), inbox[sender].bounced(id_)
            tally[id_.rsplit("-", 1)[0]][0 if copies else 1] += 1
            if not copies and not bounced:
                problems.append(f"{text!r}: neither delivered nor bounced (silently dropped)")
            elif copies and bounced:
                problems.append(f"{text!r}: delivered and bounced")
            elif copies > 1:
                problems.append(f"{text!r}: delivered {copies} times")
            elif bounced and not id_.startswith("across"):
                problems.append(f"{text!r}: same-node message bounced ({inbox[sender].error_for(text)})")
        print(f"{len(sent)} messages; master killed {killed_at - started:.1f}s in, replica promoted "
              f"{promoted:.1f}s later; delivered/bounced per conversation: {tally}")

        # after the failover, without restarting a node: presence and chat across nodes again
        erin = await login(node1, f"erin@{d}/desk", PASSWORD)
        for watcher in (bob, alice):
            try:
                await watcher.wait_presence(available(f"erin@{d}/desk"), ARRIVES)
            except AssertionError:
                problems.append(f"{watcher.boundjid} did not see erin (node1) log in after the failover")
        marker = f"after the failover {time.monotonic()}"
        bob.send_presence(pshow="away", pstatus=marker)
        try:
            await alice.wait_presence(lambda p: p["from"] == f"bob@{d}/laptop" and p["status"] == marker, ARRIVES)
        except AssertionError:
            problems.append("alice (node1) did not see bob's (node2) presence change after the failover")
        after = [(alice, bob, "across after the failover"), (bob, alice, "and back"), (erin, dave, "erin to dave")]
        inbox[erin] = Inbox(erin)
        for sender, peer, text in after:
            sender.send_message(mto=peer.boundjid.bare, mbody=text, mtype="chat")
        await until(lambda: all(inbox[peer].count(text) for _, peer, text in after), ARRIVES)
        for sender, peer, text in after:
            if inbox[peer].count(text) != 1:
                error = inbox[sender].error_for(text)
                problems.append(f"{text!r} reached {peer.boundjid} {inbox[peer].count(text)} times after the "
                                f"failover" + (f" (error {error})" if error else ""))
        # the directory on the new master: an account made now can log in on either node at once
        await asyncio.to_thread(cluster.add_users, PASSWORD, f"frank@{d}")
        for node in (node1, node2):
            try:
                await logout(await login(node, f"frank@{d}/{node.folder.name}", PASSWORD))
            except LoginFailed as e:
                problems.append(f"a user added after the failover cannot log in on {node.folder.name}: {e}")
        assert problems == [], "\n".join(problems) + "\n" + cluster.logs(3000)
        await logout(alice, bob, carol, dave, erin)
    finally:
        await asyncio.to_thread(cluster.stop)
