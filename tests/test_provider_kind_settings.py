"""What an operator writes for an Anthropic, Gemini or Vertex AI provider is checked as hostile
input, the same way in the admin's form and in ``apply_config``: a Vertex location and project
id end up in a URL, a default endpoint must pass the egress allow-list, and the secret
reference each kind needs must be there."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from gateway.admin.providers import ProviderForm
from gateway.models import Provider

pytestmark = pytest.mark.django_db

VERTEX = {
    "name": "vertex-eu",
    "kind": "vertex",
    "base_url": "",
    "api_key_ref": "env:PROVIDER_VERTEX_SA",
    "api_version": "",
    "region": "europe-west4",
    "extra": json.dumps({"project": "my-project-123"}),
    "enabled": "on",
}


def form(**changes) -> ProviderForm:
    return ProviderForm(data={**VERTEX, **changes})


def test_a_well_formed_vertex_provider_is_accepted():
    assert form().is_valid(), form().errors


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"region": "evil.example.com/x#"}, "region"),
        ({"region": ""}, "region"),
        ({"extra": json.dumps({"project": "../../other"})}, "extra"),
        ({"extra": "{}"}, "extra"),
        ({"api_key_ref": ""}, "api_key_ref"),
        ({"api_version": "v1/../../x"}, "api_version"),
        ({"kind": "gemini", "api_key_ref": ""}, "api_key_ref"),
        ({"kind": "anthropic", "api_version": "latest"}, "api_version"),
        ({"kind": "anthropic", "extra": json.dumps({"default_max_tokens": 0})}, "extra"),
        ({"kind": "anthropic", "extra": json.dumps({"default_max_tokens": "4096"})}, "extra"),
    ],
)
def test_the_admin_refuses_hostile_or_missing_kind_settings(changes, field):
    bound = form(**changes)
    assert not bound.is_valid()
    assert field in bound.errors
    # The value is never repeated back.
    for name, value in changes.items():
        if name != "kind" and len(value) > 8:
            assert value not in str(bound.errors)


def test_a_default_endpoint_outside_the_allow_list_is_refused(settings):
    settings.LLMP_UPSTREAM_HOSTS = ["api.openai.com"]
    bound = form(kind="anthropic", api_key_ref="env:ANTHROPIC_API_KEY", region="", extra="{}")
    assert not bound.is_valid()
    assert "api.anthropic.com" in str(bound.errors["base_url"])
    settings.LLMP_UPSTREAM_HOSTS = ["api.anthropic.com"]
    bound = form(kind="anthropic", api_key_ref="env:ANTHROPIC_API_KEY", region="", extra="{}")
    assert bound.is_valid(), bound.errors


CONFIG = """\
providers:
  - name: claude
    kind: anthropic
    api_key: env:ANTHROPIC_API_KEY
    extra: {default_max_tokens: 2048}
  - name: gemini
    kind: gemini
    api_key: env:GEMINI_API_KEY
  - name: vertex-eu
    kind: vertex
    region: europe-west4
    api_key: file:/run/secrets/vertex-sa.json
    extra: {project: my-project-123}
deployments:
  - name: claude-sonnet
    provider: claude
    model: claude-sonnet-4-5
  - name: gemini-flash
    provider: vertex-eu
    model: gemini-2.5-flash
"""


def apply(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), stdout=out)
    return out.getvalue()


def test_the_config_file_declares_the_new_kinds(tmp_path):
    apply(tmp_path, CONFIG)
    assert dict(Provider.objects.values_list("name", "kind")) == {
        "claude": "anthropic",
        "gemini": "gemini",
        "vertex-eu": "vertex",
    }
    vertex = Provider.objects.get(name="vertex-eu")
    assert (vertex.region, vertex.extra) == ("europe-west4", {"project": "my-project-123"})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("region: europe-west4", "region: 'x.evil.com:443/#'", "providers[2].region: must be"),
        ("{project: my-project-123}", "{project: 'a/b'}", "providers[2].extra.project: must be"),
        ("api_key: env:GEMINI_API_KEY", "enabled: true", "providers[1].api_key: is required"),
    ],
)
def test_the_config_file_refuses_what_the_admin_refuses(tmp_path, old, new, message):
    with pytest.raises(CommandError) as caught:
        apply(tmp_path, CONFIG.replace(old, new))
    assert message in str(caught.value)
    assert not Provider.objects.exists()


def test_the_record_of_processing_names_where_the_new_kinds_send_data():
    from deployments.compliance.processing_record import record_of_processing
    from gateway.models import ProviderDeployment

    for name, kind, fields in [
        ("vertex-eu", "vertex", {"region": "europe-west4", "extra": {"project": "my-project-1"}}),
        ("claude", "anthropic", {}),
    ]:
        provider = Provider.objects.create(name=name, kind=kind, **fields)
        ProviderDeployment.objects.create(name=f"{name}-d", provider=provider, model="m")

    recipients = {r.name: r for r in record_of_processing()["recipients"]}
    vertex, claude = recipients["vertex-eu"], recipients["claude"]
    assert vertex.endpoint == "https://europe-west4-aiplatform.googleapis.com"
    assert vertex.location == "Google Cloud location europe-west4"
    assert "europe-west4" in vertex.transfer
    assert (claude.endpoint, claude.kind) == ("https://api.anthropic.com", "Anthropic")
    assert claude.location.startswith("unknown")
