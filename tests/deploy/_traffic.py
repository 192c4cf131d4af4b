"""Attribute bags shaped like an Istio 1.4 proxy's, for the deploy tests' Checks and Reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mixer.attributes import AttributeValue

HOST = "reviews.default.svc.cluster.local"


def http_bag(**extra: AttributeValue) -> dict[str, AttributeValue]:
    """One inbound HTTP request as the sidecar reports it (it matches the stock metric and log rules)."""
    now = datetime.now(UTC)
    return {
        "request.time": now,
        "response.time": now + timedelta(milliseconds=7),
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "request.id": "deploy-test",
        "request.path": "/reviews/1",
        "request.method": "GET",
        "request.headers": {"x-request-id": "deploy-test"},
        "destination.service.host": HOST,
        "destination.service.name": "reviews",
        "response.code": 200,
        "response.duration": timedelta(milliseconds=7),
        **extra,
    }


def tcp_bag(event: str, **extra: AttributeValue) -> dict[str, AttributeValue]:
    """One TCP connection event (``open`` or ``close``) with its byte counts."""
    return {
        "context.protocol": "tcp",
        "context.reporter.kind": "inbound",
        "connection.event": event,
        "connection.sent.bytes": 120,
        "connection.received.bytes": 80,
        "destination.service.host": HOST,
        "destination.service.name": "reviews",
        **extra,
    }
