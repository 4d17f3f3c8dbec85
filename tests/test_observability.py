"""/metrics and /readyz's details name aliases, deployments, providers and processes: only a
caller with the observability token or from an allowed network sees them."""

from __future__ import annotations

import ipaddress

import pytest

OUTSIDE = "203.0.113.9"


@pytest.fixture
def observability(settings):
    settings.LLMP_OBSERVABILITY_TOKEN = "obs-token-0123456789abcdefghijklmnop"
    settings.LLMP_OBSERVABILITY_NETWORKS = [ipaddress.ip_network("10.1.0.0/16")]
    return settings.LLMP_OBSERVABILITY_TOKEN


def test_metrics_refuse_a_caller_outside_the_allowed_networks_without_the_token(
    db, client, observability
):
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 403
    assert (
        client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer wrong").status_code
        == 403
    )
    allowed = client.get(
        "/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {observability}"
    )
    assert allowed.status_code == 200 and b"llmp_" in allowed.content
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_readyz_gives_outsiders_the_status_only(db, client, observability):
    outside = client.get("/readyz", REMOTE_ADDR=OUTSIDE)
    assert set(outside.json()) == {"status"}
    inside = client.get(
        "/readyz", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {observability}"
    )
    assert inside.status_code == outside.status_code
    assert {"database", "cache", "providers"} <= set(inside.json()["checks"])


def test_loopback_is_allowed_by_default_but_not_a_client_behind_the_proxy(db, client, settings):
    settings.LLMP_TRUSTED_PROXY_HOPS = 1
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    # The proxy connects from loopback; the client it names is outside.
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=OUTSIDE).status_code
        == 403
    )
    assert (
        "checks"
        not in client.get("/readyz", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=OUTSIDE).json()
    )


def test_a_bad_network_setting_stops_the_start(tmp_path):
    from tests.test_audit_and_settings import run_manage

    result = run_manage(["check"], {"LLMP_OBSERVABILITY_NETWORKS": "10.0.0.0/33"}, tmp_path)
    assert result.returncode != 0
    assert "LLMP_OBSERVABILITY_NETWORKS: '10.0.0.0/33' is not a network" in result.stderr
