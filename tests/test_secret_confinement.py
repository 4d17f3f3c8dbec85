"""Configuration is input: a provider's secret reference and base URL cannot reach the server's
own secrets, or send a credential to a host the operator has not allowed (security item 2)."""

from __future__ import annotations

import os

import pytest
from django.core.management import CommandError, call_command

from gateway.admin.providers import ProviderForm
from gateway.models import Provider
from gateway.providers.base import (
    ChatMessage,
    ChatRequest,
    ProviderConfig,
    UpstreamUnavailable,
)
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
from gateway.secrets import SecretNotFound, resolve_secret, validate_provider_secret_ref

from .upstreams import OpenAIUpstream

PLATFORM_SECRETS = [
    "SECRET_KEY",
    "LLMP_API_KEY_PEPPER",
    "LLMP_SUBJECT_HMAC_KEY",
    "LLMP_MASTER_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "AWS_SECRET_ACCESS_KEY",
    "LLMP_OIDC_CLIENT_SECRET",
    "EMAIL_HOST_PASSWORD",
    "PGPASSWORD",
]


@pytest.mark.parametrize("name", PLATFORM_SECRETS)
def test_the_platforms_own_variables_are_never_resolved_even_if_a_prefix_allows_them(
    name, settings, monkeypatch
):
    settings.LLMP_SECRET_ENV_PREFIXES = ("S", "L", "D", "R", "A", "E", "P")  # a careless operator
    monkeypatch.setenv(name, "the-servers-own-secret")
    with pytest.raises(SecretNotFound) as caught:
        resolve_secret(f"env:{name}")
    assert "platform's own settings" in str(caught.value)
    assert "the-servers-own-secret" not in str(caught.value)
    with pytest.raises(ValueError):
        validate_provider_secret_ref(f"env:{name}")


def test_environment_variables_outside_the_allowed_prefixes_are_refused(settings, monkeypatch):
    settings.LLMP_SECRET_ENV_PREFIXES = ("PROVIDER_",)
    monkeypatch.setenv("PROVIDER_OPENAI_KEY", "sk-allowed")
    monkeypatch.setenv("HOME_GROWN_TOKEN", "not-for-providers")
    assert resolve_secret("env:PROVIDER_OPENAI_KEY") == "sk-allowed"
    with pytest.raises(SecretNotFound, match="LLMP_SECRET_ENV_PREFIXES"):
        resolve_secret("env:HOME_GROWN_TOKEN")


@pytest.mark.parametrize(
    "path", ["/proc/self/environ", "/proc/1/environ", "/sys/kernel/x", "/dev/stdin"]
)
def test_proc_sys_and_dev_are_never_readable_even_with_root_allowed(path, settings):
    settings.LLMP_SECRET_FILE_DIRS = ("/",)
    with pytest.raises(SecretNotFound, match="outside the allowed"):
        resolve_secret(f"file:{path}")


def test_files_outside_the_allowed_directories_and_dot_dot_escapes_are_refused(settings, tmp_path):
    allowed, other = tmp_path / "secrets", tmp_path / "elsewhere"
    allowed.mkdir()
    other.mkdir()
    (allowed / "openai").write_text("sk-in-place\n")
    (other / "key").write_text("not-a-provider-key")
    settings.LLMP_SECRET_FILE_DIRS = (str(allowed),)
    assert resolve_secret(f"file:{allowed}/openai") == "sk-in-place"
    for ref in (f"file:{other}/key", f"file:{allowed}/../elsewhere/key"):
        with pytest.raises(SecretNotFound) as caught:
            resolve_secret(ref)
        assert "not-a-provider-key" not in str(caught.value)


def test_a_symlink_planted_in_the_secrets_directory_cannot_reach_other_files(settings, tmp_path):
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    target = tmp_path / "server.key"
    target.write_text("private")
    os.symlink(target, allowed / "innocent")
    settings.LLMP_SECRET_FILE_DIRS = (str(allowed),)
    validate_provider_secret_ref(f"file:{allowed}/innocent")  # looks fine when saved...
    with pytest.raises(SecretNotFound, match="refused"):
        resolve_secret(f"file:{allowed}/innocent")  # ...but its real path is elsewhere


def test_the_platforms_data_directory_is_never_readable(settings):
    settings.LLMP_SECRET_FILE_DIRS = (str(settings.DATA_DIR.parent),)
    with pytest.raises(SecretNotFound, match="data directory"):
        resolve_secret(f"file:{settings.DATA_DIR}/secret_key")


def test_aws_secret_ids_need_an_allowed_prefix_also_inside_an_arn(settings):
    settings.LLMP_SECRET_AWS_PREFIXES = ()
    with pytest.raises(ValueError, match="none set"):
        validate_provider_secret_ref("aws-sm:prod/llm/openai")
    settings.LLMP_SECRET_AWS_PREFIXES = ("prod/llm/",)
    validate_provider_secret_ref("aws-sm:prod/llm/openai#key")
    validate_provider_secret_ref(
        "aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/llm/openai-AbCdEf"
    )
    for ref in (
        "aws-sm:prod/db/master",
        "aws-sm:arn:aws:secretsmanager:eu-west-1:1:secret:x",
        "aws-sm:arn:aws:secretsmanager:eu-west-1:1:other:prod/llm/x",
    ):
        with pytest.raises(ValueError, match="LLMP_SECRET_AWS_PREFIXES"):
            validate_provider_secret_ref(ref)


# --------------------------------------------------------------------------- where it is set


HOSTILE_CONFIG = """
providers:
  - name: exfil
    kind: openai
    base_url: {url}
    api_key: {ref}
"""


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ref",
    ["env:SECRET_KEY", "file:/proc/self/environ", "env:LLMP_MASTER_KEY", "aws-sm:prod/db/master"],
)
def test_apply_config_refuses_a_reference_to_the_servers_secrets(ref, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(HOSTILE_CONFIG.format(url="https://attacker.example/v1", ref=ref))
    with pytest.raises(CommandError) as caught:
        call_command("apply_config", str(path))
    assert "providers[0].api_key" in str(caught.value)
    assert not Provider.objects.filter(name="exfil").exists()


@pytest.mark.django_db
def test_apply_config_refuses_a_host_outside_the_allow_list(tmp_path, settings):
    settings.LLMP_UPSTREAM_HOSTS = ("api.openai.com", "*.openai.azure.com")
    path = tmp_path / "config.yaml"
    path.write_text(
        HOSTILE_CONFIG.format(url="https://attacker.example/v1", ref="env:OPENAI_API_KEY")
    )
    with pytest.raises(CommandError, match=r"providers\[0\].base_url.*attacker.example"):
        call_command("apply_config", str(path))
    assert not Provider.objects.filter(name="exfil").exists()
    for url in ("https://api.openai.com/v1", "https://eu.openai.azure.com/"):
        path.write_text(HOSTILE_CONFIG.format(url=url, ref="env:OPENAI_API_KEY"))
        call_command("apply_config", str(path))
        assert Provider.objects.get(name="exfil").base_url == url


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("api_key_ref", "env:SECRET_KEY", "platform's own settings"),
        ("api_key_ref", "file:/proc/self/environ", "outside the allowed"),
        ("api_key_ref", "env:UNLISTED_TOKEN", "LLMP_SECRET_ENV_PREFIXES"),
        ("base_url", "https://attacker.example/v1", "LLMP_UPSTREAM_HOSTS"),
        ("base_url", "https://openai.azure.com.attacker.example/", "LLMP_UPSTREAM_HOSTS"),
    ],
)
def test_the_admin_provider_form_refuses_the_same(field, value, message, settings):
    settings.LLMP_UPSTREAM_HOSTS = ("api.openai.com", "*.openai.azure.com")
    data = {
        "name": "p",
        "kind": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key_ref": "env:OPENAI_API_KEY",
        "api_version": "",
        "region": "",
        "extra": "{}",
        "enabled": "on",
        field: value,
    }
    form = ProviderForm(data=data)
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])


# --------------------------------------------------------------------------- where it is sent


@pytest.fixture
def listener():
    with OpenAIUpstream() as upstream:
        yield upstream


async def test_no_probe_or_request_carries_a_credential_to_a_host_no_longer_allowed(
    listener, settings, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-stay-home")
    config = ProviderConfig(
        name="old-row", kind="openai", base_url=listener.base_url, api_key_ref="env:OPENAI_API_KEY"
    )
    adapter = OpenAICompatibleAdapter(config)
    assert await adapter.check() is True  # no allow-list: any host
    assert listener.requests[-1].headers.get("authorization") == "Bearer sk-must-stay-home"
    seen = len(listener.requests)

    settings.LLMP_UPSTREAM_HOSTS = ("api.openai.com",)  # the row predates the allow-list
    assert await adapter.check() is False
    with pytest.raises(UpstreamUnavailable, match="not allowed"):
        await adapter.complete(ChatRequest(model="m", messages=[ChatMessage("user", "hi")]))
    assert len(listener.requests) == seen  # nothing reached it
    await adapter.aclose()
