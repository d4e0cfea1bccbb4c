"""The PEP service every account is: requests, notifications, last items (see the package's docstring)."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import data_form
from tx_xmpp import pubsub as tx_pubsub

from chatgate.config import PEPSettings
from chatgate.features.pep.caps import Capabilities, caps_of, notify_nodes
from chatgate.features.pep.nodes import (
    ACCESS,
    DEFAULTS,
    DELIVER_NOTIFICATIONS,
    DELIVER_PAYLOADS,
    NOTIFY_RETRACT,
    SEND_LAST,
    Item,
    Node,
    normalized,
    unmet,
)
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import DELAY_NS, StanzaError, iq_result, stamp
from chatgate.storage.interfaces import Change, IDirectory
from chatgate.xml import CLIENT_NS, Element, StreamError, parse_fragment, serialize

log = Logger()

PUBSUB_NS = "http://jabber.org/protocol/pubsub"
OWNER_NS = PUBSUB_NS + "#owner"
EVENT_NS = PUBSUB_NS + "#event"
ERRORS_NS = PUBSUB_NS + "#errors"
CONFIG_NS = PUBSUB_NS + "#node_config"
PUBLISH_OPTIONS_NS = PUBSUB_NS + "#publish-options"
#: Session.state key (shared with the cluster) of the nodes a session wants notifications of
STATE = "pep"
#: Session.state key (this node's) of the caps its interest was read from
_CAPS = "pep-caps"
#: users whose nodes are kept in memory at most
CACHED = 20000

#: what the service does, for disco (XEP-0060 §10)
FEATURES = ("access-open", "access-presence", "access-whitelist", "auto-create", "auto-subscribe",
            "config-node", "config-node-max", "create-and-configure", "create-nodes", "delete-items", "delete-nodes",
            "filtered-notifications", "item-ids", "last-published", "multi-items", "persistent-items",
            "presence-notifications", "publish", "publish-options", "purge-nodes", "retract-items",
            "retrieve-affiliations", "retrieve-items", "retrieve-subscriptions")


def _error(condition: str, pubsub_condition: str | None, text: str | None = None) -> StanzaError:
    """A stanza error with the XEP-0060 §7-§8 pubsub#errors condition."""
    return StanzaError(condition, text, Element((ERRORS_NS, pubsub_condition)) if pubsub_condition else None)


def _unsupported() -> StanzaError:
    return _error("feature-not-implemented", "unsupported", "Not a request this service takes")


def _request(stanza: domish.Element) -> tx_pubsub.PubSubRequest:
    """The request, read by tx_xmpp; its errors as chatgate's."""
    try:
        return tx_pubsub.PubSubRequest.fromElement(stanza)
    except NotImplementedError:
        raise _unsupported() from None
    except jabber_error.StanzaError as e:
        raise StanzaError(e.condition, e.text, e.appCondition) from None
    except (KeyError, ValueError, data_form.Error) as e:
        raise StanzaError("bad-request", str(e) or "Malformed request") from None


def _options(form: data_form.Form | None, max_items: int) -> dict[str, str]:
    return {} if form is None else normalized(form.getValues(), max_items)


class Pep:
    """Every account's personal eventing service (XEP-0163)."""

    def __init__(self, router: Router, directory: IDirectory, settings: PEPSettings, max_size: int) -> None:
        self.router = router
        self.directory = directory
        self.settings = settings
        self.max_size = max_size
        self.caps = Capabilities(router)
        #: bare JID -> node -> Node, of the users read lately (bounded), dropped on each change told
        self._cache: OrderedDict[str, dict[str, Node]] = OrderedDict()
        #: bumped by every change told: a read under way when one comes is not kept
        self._epoch = 0
        #: one change at a time per user (read, change, write)
        self._locks: dict[str, defer.DeferredLock] = {}

    # -- the nodes, through the cache

    @defer.inlineCallbacks
    def nodes(self, bare: str, fresh: bool = False):
        """The user's nodes (name -> Node); *fresh*: read from the store, not this node's copy."""
        cached = None if fresh else self._cache.get(bare)
        if cached is not None:
            self._cache.move_to_end(bare)
            return cached
        epoch = self._epoch
        localpart, _, domain = bare.partition("@")
        texts = yield self.directory.pep_nodes(domain, localpart)
        found = {}
        for name, text in texts.items():
            try:
                found[name] = Node.from_text(text)
            except (ValueError, KeyError, TypeError):
                log.error("PEP node {node} of {bare} does not read back; left out", node=name, bare=bare)
        if epoch == self._epoch:
            self._keep(bare, found)
        return found

    def _keep(self, bare: str, nodes: dict[str, Node]) -> None:
        self._cache[bare] = nodes
        self._cache.move_to_end(bare)
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)

    def directory_changed(self, change: Change, _: object) -> None:
        if change.kind in ("pep-changed", "user-removed") and change.localpart:
            self._epoch += 1
            self._cache.pop(f"{change.localpart}@{change.domain}", None)

    def _change(self, owner: Session, name: str, change: Callable[[Node | None], Node | None]) -> defer.Deferred[Any]:
        """Apply *change* to the owner's node *name* (None: absent / remove), one change per user at a time;
        fires with (node before, node after)."""
        lock = self._locks.setdefault(owner.bare, defer.DeferredLock())

        @defer.inlineCallbacks
        def work():
            # what the store holds: this process's copy may not have heard yet of a change
            # another node made (the change feed is behind), and writing on it would undo that
            nodes = yield self.nodes(owner.bare, fresh=True)
            before = nodes.get(name)
            after = change(before)
            if after is before:
                return before, after
            kept = yield self.directory.set_pep_node(
                owner.domain, owner.jid.user, name, after.to_text() if after is not None else None,
                self.settings.max_nodes, self.settings.max_bytes)
            if not kept:
                raise StanzaError("resource-constraint", f"Your personal storage is full: at most"
                                  f" {self.settings.max_nodes} nodes and {self.settings.max_bytes // 1024} KiB")
            changed = dict(nodes)
            if after is None:
                changed.pop(name, None)
            else:
                changed[name] = after
            if owner.bare in self._cache:
                self._keep(owner.bare, changed)
            return before, after

        def unlock(result: Any) -> Any:
            if not lock.locked and not lock.waiting:
                self._locks.pop(owner.bare, None)
            return result

        return lock.run(work).addBoth(unlock)

    # -- requests

    def set(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        self._own(sender, to)
        request = _request(stanza)
        if request.verb == "publish":
            return self._publish(stanza, request, sender)
        if request.verb == "retract":
            return self._retract(stanza, request, sender)
        if request.verb == "create":
            return self._create(stanza, request, sender)
        raise _error("feature-not-implemented", "unsupported",
                     "Contacts' nodes are followed through entity capabilities (+notify), not subscriptions")

    @defer.inlineCallbacks
    def get(self, stanza: domish.Element, sender: Session, to: JID):
        request = _request(stanza)
        owner = to.userhost()
        reply = iq_result(stanza)
        pubsub = reply.addElement((PUBSUB_NS, "pubsub"))
        if request.verb == "items":
            nodes = yield self.nodes(owner)
            node = nodes.get(request.nodeIdentifier)
            if node is None:
                raise StanzaError("item-not-found", "No such node")
            if not node.readable_by(sender.bare, owner):
                raise _error("not-allowed", "closed-node", "The node is its owner's alone")
            items = node.items
            if request.itemIdentifiers:
                wanted = set(request.itemIdentifiers)
                items = [i for i in items if i.id in wanted]
            elif request.maxItems:
                items = items[-request.maxItems:] if request.maxItems > 0 else []
            listing = pubsub.addElement("items")
            listing["node"] = request.nodeIdentifier
            for item in items:
                listing.addChild(self._item(item, (PUBSUB_NS, "item")))
        elif request.verb == "affiliations":
            self._own(sender, to)
            nodes = yield self.nodes(owner)
            listing = pubsub.addElement("affiliations")
            for name in sorted(nodes):
                if request.nodeIdentifier in (None, name):
                    entry = listing.addElement("affiliation")
                    entry["node"], entry["affiliation"] = name, "owner"
        elif request.verb == "subscriptions":
            self._own(sender, to)
            pubsub.addElement("subscriptions")  # notifications follow +notify, never a subscription
        else:
            raise _unsupported()
        sender.send(reply)

    @defer.inlineCallbacks
    def owner_get(self, stanza: domish.Element, sender: Session, to: JID):
        self._own(sender, to)
        request = _request(stanza)
        reply = iq_result(stanza)
        pubsub = reply.addElement((OWNER_NS, "pubsub"))
        if request.verb == "default":
            pubsub.addElement("default").addChild(self._form(DEFAULTS))
        elif request.verb == "configureGet":
            node = (yield self.nodes(sender.bare)).get(request.nodeIdentifier)
            if node is None:
                raise StanzaError("item-not-found", "No such node")
            configure = pubsub.addElement("configure")
            configure["node"] = request.nodeIdentifier
            configure.addChild(self._form(node.config))
        else:
            raise _unsupported()
        sender.send(reply)

    @defer.inlineCallbacks
    def owner_set(self, stanza: domish.Element, sender: Session, to: JID):
        self._own(sender, to)
        request = _request(stanza)
        name = request.nodeIdentifier
        if request.verb == "configureSet":
            options = _options(request.options, self.settings.max_items)

            def configure(node: Node | None) -> Node:
                if node is None:
                    raise StanzaError("item-not-found", "No such node")
                config = {**node.config, **options}
                return Node(config, node.items[-int(config["pubsub#max_items"]):])

            yield self._change(sender, name, configure)
        elif request.verb in ("delete", "purge"):
            def empty(node: Node | None) -> Node | None:
                if node is None:
                    raise StanzaError("item-not-found", "No such node")
                return None if request.verb == "delete" else Node(node.config, [])

            before, _ = yield self._change(sender, name, empty)
            event = Element((EVENT_NS, "event"))
            if request.verb == "delete":
                event.addElement("delete")["node"] = name
            else:
                event.addElement("purge")["node"] = name
            self._notify(sender.bare, sender.domain, name, before, event)
        else:
            raise _unsupported()
        sender.send(iq_result(stanza))

    @staticmethod
    def _own(sender: Session, to: JID) -> None:
        if to.userhost() != sender.bare:
            raise StanzaError("forbidden", "Only the owner changes their nodes")

    def _form(self, config: dict[str, str]) -> domish.Element:
        fields = [data_form.Field("hidden", var="FORM_TYPE", value=CONFIG_NS)]
        for var in DEFAULTS:
            value = config.get(var, DEFAULTS[var])
            if var == ACCESS:
                fields.append(data_form.Field("list-single", var=var, value=value,
                                              options=[data_form.Option(v) for v in ("open", "presence", "whitelist")]))
            elif value in ("true", "false"):
                fields.append(data_form.Field("boolean", var=var, value=value == "true"))
            else:
                fields.append(data_form.Field("text-single", var=var, value=value))
        return data_form.Form("form", fields=fields).toElement()

    @defer.inlineCallbacks
    def _publish(self, stanza: domish.Element, request: tx_pubsub.PubSubRequest, sender: Session):
        name = request.nodeIdentifier
        if not request.items:
            raise _error("bad-request", "item-required", "Publish one item")
        if len(request.items) > 1:
            raise _error("bad-request", "invalid-payload", "Publish one item at a time")
        given = request.items[0]
        payloads = list(given.elements())
        if len(payloads) != 1:
            raise _error("bad-request", "payload-required" if not payloads else "invalid-payload",
                         "An item carries exactly one payload element")
        xml = serialize(payloads[0])
        if len(xml.encode("utf-8")) > self.settings.max_bytes:
            raise _error("not-acceptable", "payload-too-big", "The item is larger than your personal storage")
        wanted = _options(request.options, self.settings.max_items)
        item = Item(given.getAttribute("id") or uuid.uuid4().hex, xml, self.router.clock.seconds())

        def publish(node: Node | None) -> Node:
            if node is None:  # auto-create (§7.1.4) with the publish-options as configuration (§7.1.5)
                node = Node({**DEFAULTS, **wanted}, [])
            elif unmet(node.config, wanted):
                raise _error("conflict", "precondition-not-met",
                             f"The node's {', '.join(unmet(node.config, wanted))} differ")
            return node.with_item(item)

        _, node = yield self._change(sender, name, publish)
        reply = iq_result(stanza)
        published = reply.addElement((PUBSUB_NS, "pubsub")).addElement("publish")
        published["node"] = name
        published.addElement("item")["id"] = item.id
        sender.send(reply)
        event = Element((EVENT_NS, "event"))
        items = event.addElement("items")
        items["node"] = name
        items.addChild(self._item(item, (EVENT_NS, "item"), payload=node.flag(DELIVER_PAYLOADS)))
        self._notify(sender.bare, sender.domain, name, node, event)

    @defer.inlineCallbacks
    def _retract(self, stanza: domish.Element, request: tx_pubsub.PubSubRequest, sender: Session):
        name, ids = request.nodeIdentifier, set(request.itemIdentifiers or ())
        if not ids:
            raise _error("bad-request", "item-required", "Name the item to retract")

        def retract(node: Node | None) -> Node:
            if node is None or not ids & {i.id for i in node.items}:
                raise StanzaError("item-not-found", "No such item")
            return Node(node.config, [i for i in node.items if i.id not in ids])

        before, node = yield self._change(sender, name, retract)
        sender.send(iq_result(stanza))
        if request.notify or (request.notify is None and node.flag(NOTIFY_RETRACT)):
            event = Element((EVENT_NS, "event"))
            items = event.addElement("items")
            items["node"] = name
            for item_id in sorted(ids & {i.id for i in before.items}):
                items.addElement("retract")["id"] = item_id
            self._notify(sender.bare, sender.domain, name, node, event)

    @defer.inlineCallbacks
    def _create(self, stanza: domish.Element, request: tx_pubsub.PubSubRequest, sender: Session):
        name = request.nodeIdentifier
        if not name:
            raise _error("not-acceptable", "nodeid-required", "A personal node is named")
        options = _options(request.options, self.settings.max_items)

        def create(node: Node | None) -> Node:
            if node is not None:
                raise StanzaError("conflict", "The node exists")
            return Node({**DEFAULTS, **options}, [])

        yield self._change(sender, name, create)
        sender.send(iq_result(stanza))

    @defer.inlineCallbacks
    def replace_items(self, owner: Session, name: str, items: list[tuple[str, str]], config: dict[str, str]):
        """Make *items* (id, payload) the items of the owner's node *name* (made with *config*
        if absent), each change told as a publish or a retraction."""
        now = self.router.clock.seconds()

        def replace(node: Node | None) -> Node:
            base = node if node is not None else Node({**DEFAULTS, **config}, [])
            old = {i.id: i for i in base.items}
            kept = [old[i] if i in old and old[i].xml == xml else Item(i, xml, now) for i, xml in items]
            return Node(base.config, kept[-base.max_items:])

        before, after = yield self._change(owner, name, replace)
        had = {i.id: i for i in before.items} if before is not None else {}
        event = Element((EVENT_NS, "event"))
        told = event.addElement("items")
        told["node"] = name
        for item in after.items:
            if had.get(item.id) != item:
                told.addChild(self._item(item, (EVENT_NS, "item"), payload=after.flag(DELIVER_PAYLOADS)))
        for gone in sorted(set(had) - {i.id for i in after.items}):
            told.addElement("retract")["id"] = gone
        if told.children:
            self._notify(owner.bare, owner.domain, name, after, event)

    # -- notifications

    def _item(self, item: Item, qname: tuple[str, str], payload: bool = True) -> domish.Element:
        element = Element(qname)
        element["id"] = item.id
        if payload:
            try:
                element.addChild(parse_fragment(item.xml, self.max_size))
            except StreamError:
                log.error("a PEP item {id} does not read back; sent without its payload", id=item.id)
        return element

    def _interested(self, domain: str, owner: str, name: str, node: Node | None) -> list[Session]:
        """The available sessions told of a change of *owner*'s node *name*: those whose
        client asked (+notify) and may read it (the owner's own, or the domain's)."""
        if node is not None and node.config[ACCESS] == "whitelist":
            candidates: Iterable[Session] = self.router.resources(owner).values()
        else:
            candidates = [*self.router.domain_sessions(domain), *self.router.remote_sessions(domain)]
        return [s for s in candidates if s.available and name in s.state.get(STATE, ())]

    def _notify(self, owner: str, domain: str, name: str, node: Node | None, event: domish.Element) -> None:
        if node is not None and not node.flag(DELIVER_NOTIFICATIONS):
            return
        self._send(owner, event, self._interested(domain, owner, name, node))

    def _send(self, owner: str, event: domish.Element, targets: Iterable[Session],
              delay: domish.Element | None = None) -> None:
        """The event to each target, as a headline message from the owner's bare JID (XEP-0163 §4.3.2),
        through the router's delivery (blocking applies)."""
        for session in targets:
            message = Element((CLIENT_NS, "message"))
            message["from"], message["to"], message["type"] = owner, session.full, "headline"
            message["id"] = uuid.uuid4().hex
            message.addChild(event)
            if delay is not None:
                message.addChild(delay)
            self.router.deliver_message(message, None, JID(session.full))

    def _last(self, owner: str, nodes: dict[str, Node], names: Iterable[str],
              reader: str) -> list[tuple[domish.Element, domish.Element]]:
        """Events of the last item of *owner*'s nodes *names* a reader gets on presence (§4.3.4)."""
        events = []
        for name in sorted(names):
            node = nodes.get(name)
            if (node is None or not node.items or node.config[SEND_LAST] != "on_sub_and_presence"
                    or not node.readable_by(reader, owner) or not node.flag(DELIVER_NOTIFICATIONS)):
                continue
            event = Element((EVENT_NS, "event"))
            items = event.addElement("items")
            items["node"] = name
            last = node.items[-1]
            items.addChild(self._item(last, (EVENT_NS, "item"), payload=node.flag(DELIVER_PAYLOADS)))
            delay = Element((DELAY_NS, "delay"))
            delay["from"], delay["stamp"] = owner, stamp(last.at)
            events.append((event, delay))
        return events

    # -- presence: who wants what, and the last items

    def presence_changed(self, session: Session, was_available: bool) -> None:
        if not session.available or session.closed:
            return
        key = caps_of(session.presence)
        if was_available and session.state.get(_CAPS) == key:
            return
        session.state[_CAPS] = key
        first = not was_available and not any(
            s.available for s in self.router.resources(session.bare).values() if s is not session)
        d = self.caps.features(session)
        d.addCallback(lambda features: self._interest(session, notify_nodes(features)))
        if first:
            d.addCallback(lambda _: self._announce(session))
        d.addErrback(lambda f: log.failure("PEP notifications for {full}", f, full=session.full))

    @defer.inlineCallbacks
    def _interest(self, session: Session, wanted: frozenset[str]):
        """*session*'s client wants *wanted*: shared with the cluster; the last items of what it newly asks."""
        if session.closed:
            return
        had = frozenset(session.state.get(STATE, ()))
        if wanted != had:
            session.state[STATE] = sorted(wanted)
            self.router.session_changed(session)
        gained = wanted - had
        if not gained:
            return
        owners = {session.bare} | {
            s.bare for s in [*self.router.domain_sessions(session.domain), *self.router.remote_sessions(session.domain)]
            if s.available}
        for owner in sorted(owners):
            nodes = yield self.nodes(owner)
            if session.closed:
                return
            for event, delay in self._last(owner, nodes, gained & nodes.keys(), session.bare):
                self._send(owner, event, [session], delay)

    @defer.inlineCallbacks
    def _announce(self, session: Session):
        """The user came online: their last items to the domain's clients that want them and,
        having been online all along, may have missed them."""
        nodes = yield self.nodes(session.bare)
        for name in sorted(nodes):
            others = [s for s in self._interested(session.domain, session.bare, name, nodes[name])
                      if s.bare != session.bare]
            for event, delay in self._last(session.bare, nodes, [name], ""):
                self._send(session.bare, event, others, delay)
