"""Officers configure external scanners in the admin: what a scanner may point at and hold is
checked as hostile input (the same check as ``apply_config``), each save is audited, and a new
scanner takes effect on the next request without a restart."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gateway.models import GuardrailScanner
from gateway.scanners.policy import check_scanner, check_scanner_url
from llmplatform.models import AuditEvent

from .conftest import chat, route_alias
from .scanner_servers import HttpScannerServer
from .upstreams import OpenAIUpstream

pytestmark = pytest.mark.django_db

ADD = "/admin/gateway/guardrailscanner/add/"


def _form(**fields) -> dict:
    data = {
        "name": "acme-guard",
        "kind": "http",
        "enabled": "on",
        "pre_call": "on",
        "fail_mode": "closed",
        "timeout_ms": "1500",
        "url": "https://scanner.example.com/scan",
        "auth_header": "Authorization",
        "auth_secret_ref": "",
        "language": "en",
        "score_threshold": "0.5",
        "entities": "[]",
        "on_detect": "block",
        "guardrail_version": "",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "url", "link-local"),
        ({"url": "http://metadata.google.internal/computeMetadata/v1/"}, "url", "metadata"),
        ({"url": "http://[fe80::1]:8080/scan"}, "url", "link-local"),
        ({"url": "http://[::ffff:169.254.169.254]/"}, "url", "link-local"),
        ({"url": "http://user:pw@scanner.example.com/scan"}, "url", "credentials"),
        ({"url": "ftp://scanner.example.com/scan"}, "url", "http:// or https://"),
        ({"url": ""}, "url", "required"),
        ({"timeout_ms": "600000"}, "timeout_ms", "between 50 and 30000"),
        ({"timeout_ms": "1"}, "timeout_ms", "between 50 and 30000"),
        ({"auth_secret_ref": "sk-live-1234567890abcdef"}, "auth_secret_ref", "not a secret"),
        ({"auth_secret_ref": "env:SECRET_KEY"}, "auth_secret_ref", "platform's own"),
        ({"auth_secret_ref": "file:/proc/self/environ"}, "auth_secret_ref", ""),
        (
            {"auth_secret_ref": "env:PROVIDER_X", "auth_header": "Content-Length"},
            "auth_header",
            "framing",
        ),
        ({"pre_call": None}, "pre_call", "before the call, after it, or both"),
        ({"kind": "bedrock", "url": "", "guardrail_id": ""}, "guardrail_id", "required"),
        (
            {"kind": "bedrock", "url": "", "guardrail_id": "abc", "guardrail_version": "latest"},
            "guardrail_version",
            "DRAFT",
        ),
        ({"kind": "presidio", "entities": '["email; drop"]'}, "entities", "entity types"),
    ],
)
def test_the_admin_refuses_a_hostile_scanner_configuration(admin_client, fields, field, message):
    page = admin_client.post(ADD, _form(**fields))
    assert page.status_code == 200  # the form again, with the error
    errors = page.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert not GuardrailScanner.objects.exists()
    assert not AuditEvent.objects.filter(action="admin.guardrailscanner.add").exists()
    # A rejected secret reference is never repeated back (it may be a pasted key).
    assert "sk-live-1234567890abcdef" not in page.content.decode().replace(
        'value="sk-live-1234567890abcdef"', ""
    )


def test_the_allow_list_applies_to_scanners_and_naming_a_link_local_host_allows_it(settings):
    settings.LLMP_UPSTREAM_HOSTS = ["scanner.example.com", "169.254.10.10:8080"]
    check_scanner_url("https://scanner.example.com/scan")
    with pytest.raises(ValueError, match="LLMP_UPSTREAM_HOSTS"):
        check_scanner_url("https://elsewhere.example.org/scan")
    check_scanner_url("http://169.254.10.10:8080/scan")  # named exactly: the operator means it
    with pytest.raises(ValueError, match="link-local"):
        check_scanner_url("http://169.254.169.254/")
    with pytest.raises(ValueError, match="timeout_ms"):
        check_scanner(kind="http", url="https://scanner.example.com/scan", timeout_ms=10**6)


def test_an_officer_adds_a_scanner_it_is_audited_and_the_next_request_uses_it(
    admin_client, client, principals, key_a
):
    with OpenAIUpstream(reply="fine") as upstream, HttpScannerServer() as scanner:
        route_alias("default", upstream.base_url)
        assert chat(client, key_a, [{"role": "user", "content": "an ATTACK"}]).status_code == 200
        page = admin_client.post(
            ADD,
            _form(url=scanner.base_url, tenant=str(principals.tenant_a.pk)),
            follow=True,
        )
        assert page.status_code == 200
        row = GuardrailScanner.objects.get()
        assert row.tenant == principals.tenant_a and row.fail_mode == "closed"
        audit = AuditEvent.objects.get(action="admin.guardrailscanner.add")
        assert audit.actor.startswith("user:")
        refused = chat(client, key_a, [{"role": "user", "content": "an ATTACK"}])
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "request_blocked_by_scanner"

        admin_client.post(
            "/admin/gateway/guardrailscanner/",
            {"action": "disable", "_selected_action": [str(row.pk)], "index": "0"},
            follow=True,
        )
        assert AuditEvent.objects.filter(action="guardrail_scanner.disable").count() == 1
        assert chat(client, key_a, [{"role": "user", "content": "an ATTACK"}]).status_code == 200


def test_the_scanner_list_runs_a_fixed_number_of_queries(
    admin_client, principals, django_assert_max_num_queries
):
    def add(count: int) -> None:
        start = GuardrailScanner.objects.count()
        for n in range(start, start + count):
            GuardrailScanner.objects.create(
                name=f"s{n}",
                kind="http",
                url="https://scanner.example.com/scan",
                tenant=principals.tenant_a if n % 2 else principals.tenant_b,
            )

    add(2)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get("/admin/gateway/guardrailscanner/").status_code == 200
    add(20)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = admin_client.get("/admin/gateway/guardrailscanner/")
    assert page.status_code == 200 and b"s21" in page.content
