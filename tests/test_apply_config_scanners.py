"""External scanners declared in the configuration file: applied idempotently and audited, and
checked as hostile input exactly as the admin's form checks them."""

from __future__ import annotations

import re

import pytest
from django.core.management import CommandError

from gateway.models import GuardrailScanner
from llmplatform.models import AuditEvent

from .test_apply_config import (
    CONFIG,
    RAW_KEY,
    _aws_secrets_allowed,  # noqa: F401 - its autouse fixture
    apply,
    write,
)

pytestmark = pytest.mark.django_db

SCANNERS = """\
scanners:
  - name: acme-guard
    kind: http
    tenant: tenant-a
    alias: default
    phases: [pre_call, post_call]
    fail_mode: open
    timeout_ms: 1500
    url: https://scanner.example.com/scan
    auth_secret_ref: env:PROVIDER_SCANNER_TOKEN
  - name: bedrock-guard
    kind: bedrock
    guardrail_id: gr0abc123
    guardrail_version: DRAFT
    region: eu-west-1
  - name: pii
    kind: presidio
    url: http://presidio.internal:5002
    phases: [post_call]
    entities: [EMAIL_ADDRESS, PERSON]
    score_threshold: 0.7
    on_detect: flag
"""


def test_scanners_are_applied_once_and_audited(tmp_path, principals):
    path = write(tmp_path, CONFIG + SCANNERS)
    output = apply(path)
    guard = GuardrailScanner.objects.get(name="acme-guard")
    assert guard.tenant == principals.tenant_a and guard.alias.name == "default"
    assert (guard.pre_call, guard.post_call, guard.fail_mode, guard.timeout_ms) == (
        True,
        True,
        "open",
        1500,
    )
    assert guard.auth_secret_ref == "env:PROVIDER_SCANNER_TOKEN"
    assert guard.auth_header == "Authorization"
    bedrock = GuardrailScanner.objects.get(name="bedrock-guard")
    assert bedrock.tenant is None and bedrock.alias is None and bedrock.fail_mode == "closed"
    pii = GuardrailScanner.objects.get(name="pii")
    assert (pii.pre_call, pii.post_call, pii.on_detect) == (False, True, "flag")
    assert pii.entities == ["EMAIL_ADDRESS", "PERSON"] and pii.score_threshold == 0.7
    assert AuditEvent.objects.filter(action="config.scanner.create").count() == 3
    assert "scanners:       3 created" in output

    apply(path)  # the same file again: nothing written
    assert AuditEvent.objects.filter(action__startswith="config.scanner.").count() == 3
    apply(write(tmp_path, CONFIG + SCANNERS.replace("timeout_ms: 1500", "timeout_ms: 900")))
    update = AuditEvent.objects.get(action="config.scanner.update")
    assert (update.before, update.after) == ({"timeout_ms": 1500}, {"timeout_ms": 900})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "https://scanner.example.com/scan",
            "http://169.254.169.254/latest/meta-data/",
            "scanners[0].url: the host 169.254.169.254 is link-local",
        ),
        (
            "https://scanner.example.com/scan",
            "http://metadata.google.internal/",
            "scanners[0].url: the host metadata.google.internal is link-local or a cloud",
        ),
        ("env:PROVIDER_SCANNER_TOKEN", RAW_KEY, "scanners[0].auth_secret_ref: not a secret"),
        ("env:PROVIDER_SCANNER_TOKEN", "env:DATABASE_URL", "platform's own settings"),
        ("timeout_ms: 1500", "timeout_ms: 600000", "scanners[0].timeout_ms: is too large"),
        ("phases: [pre_call, post_call]", "phases: []", "scanners[0].phases: must be"),
        ("alias: default", "alias: nowhere", "scanners[0].alias: unknown alias 'nowhere'"),
        ("guardrail_version: DRAFT", "guardrail_version: latest", "scanners[1].guardrail_version"),
        ("fail_mode: open", "fail_mode: maybe", "scanners[0].fail_mode: must be one of"),
        ("[EMAIL_ADDRESS, PERSON]", "[email]", "scanners[2].entities"),
    ],
)
def test_a_hostile_scanner_in_the_file_is_refused_with_its_path(
    tmp_path, principals, old, new, message
):
    assert old in SCANNERS
    with pytest.raises(CommandError) as refused:
        apply(write(tmp_path, CONFIG + SCANNERS.replace(old, new)))
    assert message in str(refused.value)
    assert RAW_KEY not in str(refused.value)
    assert not GuardrailScanner.objects.exists()


def test_a_scanner_naming_an_unknown_tenant_applies_nothing(tmp_path, principals):
    with pytest.raises(
        CommandError, match=re.escape("scanners[0].tenant: unknown tenant 'nobody'")
    ):
        apply(write(tmp_path, CONFIG + SCANNERS.replace("tenant: tenant-a", "tenant: nobody")))
    assert not GuardrailScanner.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="config.").exists()
