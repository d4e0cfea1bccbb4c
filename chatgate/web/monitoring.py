"""Monitoring on the admin listener: Prometheus metrics and health, without the API key.

    GET /metrics        the node's metrics (:mod:`chatgate.metrics`), Prometheus text format
    GET /health/live    200 {"status": "live"} while the reactor runs
    GET /health/ready   200 {"status": "ready"}, or 503 {"status": "not ready", "reason": "<one line>"}
                        while the stores do not answer or the listeners are not up

Scrapers and load balancers send no key, so these paths need none; what they
show (session counts by domain, the node's state) is why the admin listener
must stay on a private address (``[admin] interfaces``, 127.0.0.1 by
default). Every other path is the admin API's (:mod:`chatgate.web.admin_api`),
key and all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

log = Logger()

#: what /health/ready asks: a Deferred firing with None (ready) or the reason it is not
Readiness = Callable[[], defer.Deferred[str | None]]


class AdminRoot(resource.Resource):
    """The admin listener's one resource: monitoring paths here, the rest to the admin API."""

    isLeaf = True

    def __init__(self, api: resource.Resource | None, registry: CollectorRegistry | None,
                 readiness: Readiness | None) -> None:
        super().__init__()
        self.api = api
        self.registry = registry
        self.readiness = readiness

    def render(self, request: server.Request) -> bytes | int:
        path = request.path.rstrip(b"/")
        if self.registry is not None and request.method in (b"GET", b"HEAD"):
            if path == b"/metrics":
                request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
                request.setHeader(b"cache-control", b"no-store")
                return generate_latest(self.registry)
            if path == b"/health/live":
                return _json(request, 200, {"status": "live"})
            if path == b"/health/ready" and self.readiness is not None:
                d = self.readiness()
                d.addCallback(self._ready, request)
                d.addErrback(self._unsure, request)
                return server.NOT_DONE_YET
        if self.api is None:
            return _json(request, 404, {"error": "no such endpoint", "field": None})
        return self.api.render(request)

    def _ready(self, reason: str | None, request: server.Request) -> None:
        if reason is None:
            answer = _json(request, 200, {"status": "ready"})
        else:
            answer = _json(request, 503, {"status": "not ready", "reason": reason})
        _finish(request, answer)

    def _unsure(self, failure: Any, request: server.Request) -> None:
        log.failure("health check", failure)
        _finish(request, _json(request, 503, {"status": "not ready", "reason": "the check failed; see the log"}))


def _json(request: server.Request, status: int, payload: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(payload).encode() + b"\n"


def _finish(request: server.Request, body: bytes) -> None:
    if request.finished or request.channel is None:  # the caller went away
        return
    request.write(body)
    request.finish()
