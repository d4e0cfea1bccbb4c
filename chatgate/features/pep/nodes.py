"""A PEP node as chatgate keeps it: its configuration and its items, newest last.

The configuration holds the XEP-0060 §16.4.3 node_config fields a PEP node
honours here, each as a normalized string; a node is made with
:data:`DEFAULTS` (XEP-0163 §4.1's: presence access, last item on presence)
changed by the creator's publish-options (XEP-0060 §7.1.5) or create form,
and changed later by its owner's configure form (§8.2). Items are kept as the
text of their payload with their publication time, one record per node
(:meth:`Node.to_text`, the store's unit).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chatgate.stanza import StanzaError

ACCESS = "pubsub#access_model"
MAX_ITEMS = "pubsub#max_items"
SEND_LAST = "pubsub#send_last_published_item"
NOTIFY_RETRACT = "pubsub#notify_retract"
DELIVER_NOTIFICATIONS = "pubsub#deliver_notifications"
DELIVER_PAYLOADS = "pubsub#deliver_payloads"
PERSIST = "pubsub#persist_items"
TITLE = "pubsub#title"

#: access models: the domain (everyone is a contact, so presence = the domain), anyone
#: (sealed, so the domain too), the owner alone
ACCESS_MODELS = ("presence", "open", "whitelist")
SEND_LAST_VALUES = ("never", "on_sub", "on_sub_and_presence")
_BOOLEANS = (NOTIFY_RETRACT, DELIVER_NOTIFICATIONS, DELIVER_PAYLOADS, PERSIST)

DEFAULTS: Mapping[str, str] = {
    ACCESS: "presence",
    MAX_ITEMS: "1",
    SEND_LAST: "on_sub_and_presence",
    NOTIFY_RETRACT: "true",
    DELIVER_NOTIFICATIONS: "true",
    DELIVER_PAYLOADS: "true",
    PERSIST: "true",
    TITLE: "",
}


@dataclass(frozen=True)
class Item:
    id: str
    xml: str
    at: float


@dataclass
class Node:
    config: dict[str, str] = field(default_factory=lambda: dict(DEFAULTS))
    #: oldest first
    items: list[Item] = field(default_factory=list)

    @property
    def max_items(self) -> int:
        return int(self.config[MAX_ITEMS])

    def flag(self, name: str) -> bool:
        return self.config.get(name, DEFAULTS[name]) == "true"

    def readable_by(self, reader: str, owner: str) -> bool:
        """Whether user *reader* (bare JID, of the owner's domain) may read the node."""
        return reader == owner or self.config[ACCESS] != "whitelist"

    def to_text(self) -> str:
        return json.dumps({"c": self.config, "i": [[i.id, i.xml, i.at] for i in self.items]},
                          separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> Node:
        data = json.loads(text)
        config = dict(DEFAULTS)
        config.update({str(k): str(v) for k, v in data["c"].items()})
        return cls(config, [Item(str(i), str(x), float(a)) for i, x, a in data["i"]])

    def with_item(self, item: Item) -> Node:
        """The node with *item* published: one of the same id replaced, the oldest beyond max_items dropped."""
        items = [i for i in self.items if i.id != item.id] + [item]
        return Node(self.config, items[-self.max_items:])


def _value(values: object) -> str:
    if isinstance(values, list | tuple):
        return str(values[0]) if values else ""
    return "" if values is None else str(values)


def normalized(options: Mapping[str, object], max_items: int) -> dict[str, str]:
    """Options from a form (var -> value or values), each checked and written as chatgate
    keeps it; StanzaError not-acceptable for an option or value it cannot honour."""
    out: dict[str, str] = {}
    for var, values in options.items():
        if var == "FORM_TYPE":
            continue
        value = _value(values).strip()
        if var == ACCESS:
            if value not in ACCESS_MODELS:
                raise StanzaError("not-acceptable", f"Access model {value!r} is not offered here"
                                                    f" (only {', '.join(ACCESS_MODELS)})")
        elif var == MAX_ITEMS:
            if value == "max":
                value = str(max_items)
            elif not value.isdigit() or not 1 <= int(value) <= max_items:
                raise StanzaError("not-acceptable", f"{MAX_ITEMS} is a number from 1 to {max_items}, or max")
            value = str(int(value))
        elif var == SEND_LAST:
            if value not in SEND_LAST_VALUES:
                raise StanzaError("not-acceptable", f"{SEND_LAST} is one of {', '.join(SEND_LAST_VALUES)}")
        elif var in _BOOLEANS:
            if value not in ("1", "true", "0", "false"):
                raise StanzaError("not-acceptable", f"{var} is a boolean")
            value = "true" if value in ("1", "true") else "false"
        elif var == TITLE:
            value = value[:256]
        else:
            raise StanzaError("not-acceptable", f"Node option {var} is not offered here")
        out[var] = value
    return out


def unmet(config: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """The publish-options a node's configuration does not meet (XEP-0060 §7.1.5)."""
    return [var for var, value in wanted.items() if config.get(var, DEFAULTS.get(var)) != value]


def config_fields() -> Iterable[str]:
    return DEFAULTS.keys()
