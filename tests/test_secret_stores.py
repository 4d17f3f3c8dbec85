"""Secret references to Azure Key Vault, GCP Secret Manager and HashiCorp Vault, resolved by the
real SDKs (azure-identity with azure-keyvault-secrets, google-auth, hvac) against local HTTPS
servers speaking each service's REST API and sign-in (tests/secret_store_servers.py): reads,
sign-in modes, rotation (after the TTL, or at once after a provider's 401), outages, the
operator's allow-lists, hostile store settings, and a platform secret read at start-up."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import secrets
from gateway.providers.base import ChatMessage, ChatRequest, ProviderConfig
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
from gateway.secrets import (
    SecretNotFound,
    aresolve_secret,
    invalidate_secret,
    resolve_secret,
    validate_provider_secret_ref,
    validate_secret_ref,
)
from llmplatform.secret_stores import SecretStoreConfig, SecretStoreConfigError, check_service_url

from .secret_store_servers import AzureServer, GcpServer, MetadataServer, StoreCA, VaultServer
from .upstreams import OpenAIUpstream

RAW_KEY = "sk-live-THIS-MUST-NEVER-BE-PRINTED-1234567890"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> StoreCA:
    return StoreCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(autouse=True)
def _store_settings(settings, ca) -> Iterator[None]:
    secrets.clear_secret_cache()
    settings.LLMP_SECRETS_CACHE_SECONDS = 300
    settings.LLMP_SECRETS_CA_BUNDLE = str(ca.ca_file)
    settings.LLMP_SECRET_AZURE_VAULTS = ("llmp-kv",)
    settings.LLMP_SECRET_GCP_PROJECTS = ("llmp-test/provider-",)
    settings.LLMP_SECRET_VAULT_PATHS = ("secret/llm/",)
    yield
    secrets.clear_secret_cache()


@pytest.fixture
def azure(ca, settings, monkeypatch) -> Iterator[AzureServer]:
    with AzureServer(ca) as server:
        settings.LLMP_AZURE_KEYVAULT_URL = server.url
        settings.LLMP_AZURE_AUTHORITY_HOST = server.url
        settings.LLMP_AZURE_CREDENTIAL = "environment"
        monkeypatch.setenv("AZURE_TENANT_ID", server.tenant)
        monkeypatch.setenv("AZURE_CLIENT_ID", server.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", server.client_secret)
        yield server


@pytest.fixture
def gcp(ca, settings, tmp_path) -> Iterator[GcpServer]:
    with GcpServer(ca, tmp_path) as server:
        settings.LLMP_GCP_SECRETMANAGER_URL = server.url
        settings.LLMP_GCP_CREDENTIALS_FILE = str(server.credentials_file)
        yield server


@pytest.fixture
def vault(ca, settings) -> Iterator[VaultServer]:
    with VaultServer(ca) as server:
        settings.LLMP_VAULT_ADDR = server.url
        settings.LLMP_VAULT_AUTH = "approle"
        settings.LLMP_VAULT_ROLE_ID = server.role_id
        settings.LLMP_VAULT_SECRET_ID = server.secret_id
        yield server


# --------------------------------------------------------------------------- reference forms


@pytest.mark.parametrize(
    "ref",
    [
        "azure-kv:llmp-kv/openai-key",
        "azure-kv:llmp-kv/openai-key#0123456789abcdef0123456789abcdef",
        "gcp-sm:llmp-test/provider-openai",
        "gcp-sm:123456789/provider-openai#3",
        "gcp-sm:llmp-test/provider-openai#latest",
        "vault:secret/llm/openai#api_key",
        "vault:kv/team-a/llm/openai#api-key",
    ],
)
def test_it_accepts_well_formed_store_references(ref):
    validate_secret_ref(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "azure-kv:",
        "azure-kv:llmp-kv",
        "azure-kv:llmp-kv/",
        "azure-kv:llmp-kv/under_score",
        "azure-kv:llmp-kv/name#",
        "azure-kv:../openai",
        "gcp-sm:llmp-test",
        "gcp-sm:Upper-Case/x",
        "gcp-sm:llmp-test/a/b",
        "gcp-sm:llmp-test/x#",
        "vault:secret/llm/openai",
        "vault:openai#key",
        "vault:secret/../sys/raw#key",
        "vault:secret/llm/./x#key",
        "vault:secret//llm#key",
        f"vault:secret/llm/{RAW_KEY} #key",
    ],
)
def test_it_rejects_malformed_store_references_without_echoing_them(ref):
    with pytest.raises(ValueError) as caught:
        validate_secret_ref(ref)
    assert RAW_KEY not in str(caught.value)
    assert ref not in str(caught.value) or ref.endswith(":")


# --------------------------------------------------------------------------- allow-lists


@pytest.mark.parametrize(
    ("ref", "setting"),
    [
        ("azure-kv:other-kv/openai-key", "LLMP_SECRET_AZURE_VAULTS"),
        ("azure-kv:llmp-kv2/openai-key", "LLMP_SECRET_AZURE_VAULTS"),  # not a prefix match
        ("gcp-sm:llmp-test/database-password", "LLMP_SECRET_GCP_PROJECTS"),
        ("gcp-sm:other-project/provider-x", "LLMP_SECRET_GCP_PROJECTS"),
        ("vault:secret/platform/master#key", "LLMP_SECRET_VAULT_PATHS"),
        ("vault:secret/llm-admin/x#key", "LLMP_SECRET_VAULT_PATHS"),
    ],
)
def test_references_outside_the_operators_allow_list_are_refused(ref, setting, vault):
    with pytest.raises(ValueError, match=setting):
        validate_provider_secret_ref(ref)
    with pytest.raises(SecretNotFound, match="refused secret reference"):
        resolve_secret(ref)
    assert vault.requests == []  # refused before anything was fetched


def test_nothing_in_a_store_is_allowed_until_an_operator_says_so(settings):
    settings.LLMP_SECRET_AZURE_VAULTS = ()
    settings.LLMP_SECRET_GCP_PROJECTS = ()
    settings.LLMP_SECRET_VAULT_PATHS = ()
    for ref in ("azure-kv:llmp-kv/a", "gcp-sm:llmp-test/provider-a", "vault:secret/llm/a#k"):
        with pytest.raises(ValueError, match="none set"):
            validate_provider_secret_ref(ref)


@pytest.mark.parametrize(
    "name",
    ["AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "VAULT_TOKEN", "IDENTITY_HEADER"],
)
def test_the_stores_sign_in_credentials_cannot_be_read_through_env_references(
    name, settings, monkeypatch
):
    settings.LLMP_SECRET_ENV_PREFIXES = ("AZURE_", "VAULT_", "IDENTITY_")
    monkeypatch.setenv(name, "the-platforms-store-credential")
    with pytest.raises(SecretNotFound, match="platform's own settings"):
        resolve_secret(f"env:{name}")


# --------------------------------------------------------------------------- hostile settings


@pytest.mark.parametrize(
    "url",
    [
        "http://vault.example.com:8200",
        "https://user:pass@vault.example.com",
        "https://vault.example.com/v1/secret",
        "https://vault.example.com?x=1",
        "https://vault.example.com#x",
        "ftp://vault.example.com",
        "https://",
        "https://vault.example.com:99999",
        "vault.example.com:8200",
    ],
)
def test_store_urls_that_could_leak_a_credential_are_refused(url):
    with pytest.raises(SecretStoreConfigError) as caught:
        check_service_url("LLMP_VAULT_ADDR", url, http_on_loopback=True)
    assert "LLMP_VAULT_ADDR" in str(caught.value)


def test_plain_http_is_only_for_a_vault_agent_on_loopback():
    check_service_url("LLMP_VAULT_ADDR", "http://127.0.0.1:8100", http_on_loopback=True)
    check_service_url("LLMP_VAULT_ADDR", "http://[::1]:8100", http_on_loopback=True)
    with pytest.raises(SecretStoreConfigError):
        check_service_url("LLMP_AZURE_AUTHORITY_HOST", "http://127.0.0.1:8100")
    with pytest.raises(SecretStoreConfigError):
        SecretStoreConfig(azure_vault_url="http://{vault}.vault.azure.net").validate()
    with pytest.raises(SecretStoreConfigError, match="LLMP_VAULT_AUTH"):
        SecretStoreConfig(vault_auth="userpass").validate()


def test_a_hostile_store_setting_stops_the_start():
    result = _start_settings({"LLMP_AZURE_AUTHORITY_HOST": "http://attacker.example"})
    assert result.returncode != 0
    assert "LLMP_AZURE_AUTHORITY_HOST must use https" in result.stderr


# --------------------------------------------------------------------------- Azure Key Vault


def test_it_reads_an_azure_key_vault_secret_with_a_client_secret(azure):
    azure.set_secret("openai-key", "sk-from-key-vault")
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == "sk-from-key-vault"
    assert ("POST", f"/{azure.tenant}/oauth2/v2.0/token") in azure.requests
    assert azure.tokens_issued == 1


def test_it_signs_in_to_azure_with_workload_identity(azure, settings, monkeypatch, tmp_path):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(azure.federated_token)
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    settings.LLMP_AZURE_CREDENTIAL = "workload-identity"
    azure.set_secret("openai-key", "sk-via-workload-identity")
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == "sk-via-workload-identity"


def test_it_signs_in_to_azure_with_a_managed_identity(azure, settings, monkeypatch):
    with MetadataServer(azure=azure) as identity:
        monkeypatch.delenv("AZURE_CLIENT_SECRET")
        monkeypatch.delenv("AZURE_CLIENT_ID")
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{identity.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", identity.identity_header)
        settings.LLMP_AZURE_CREDENTIAL = "managed-identity"
        azure.set_secret("openai-key", "sk-via-managed-identity")
        assert resolve_secret("azure-kv:llmp-kv/openai-key") == "sk-via-managed-identity"
        assert identity.requests[0][1] == "/msi/token"


def test_a_wrong_azure_client_secret_is_a_clear_error(azure, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", RAW_KEY)
    azure.set_secret("openai-key", "sk-unreachable")
    with pytest.raises(SecretNotFound, match="llmp-kv/openai-key cannot be read") as caught:
        resolve_secret("azure-kv:llmp-kv/openai-key")
    assert RAW_KEY not in str(caught.value)
    assert caught.value.__cause__ is None


def test_a_pinned_azure_version_stays_put_while_the_latest_moves(azure):
    first = azure.set_secret("openai-key", "sk-v1")
    azure.set_secret("openai-key", "sk-v2")
    assert resolve_secret(f"azure-kv:llmp-kv/openai-key#{first}") == "sk-v1"
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == "sk-v2"


def test_an_azure_rotation_is_picked_up_after_the_ttl(azure, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 0.5
    azure.set_secret("openai-key", "sk-old")
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == "sk-old"
    azure.set_secret("openai-key", "sk-new")
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == "sk-old"  # cached
    time.sleep(0.6)
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == "sk-new"


def test_a_missing_azure_secret_names_the_reference(azure):
    with pytest.raises(SecretNotFound, match=r"Azure Key Vault secret llmp-kv/absent does not"):
        resolve_secret("azure-kv:llmp-kv/absent")


def test_during_an_azure_outage_the_cached_value_serves_until_its_ttl(azure, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 1.0
    azure.set_secret("openai-key", RAW_KEY)
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == RAW_KEY
    azure.down = True
    assert resolve_secret("azure-kv:llmp-kv/openai-key") == RAW_KEY
    time.sleep(1.1)
    with pytest.raises(SecretNotFound) as caught:
        resolve_secret("azure-kv:llmp-kv/openai-key")
    assert "llmp-kv/openai-key cannot be read" in str(caught.value)
    assert RAW_KEY not in str(caught.value)


# --------------------------------------------------------------------------- GCP Secret Manager


def test_it_reads_a_gcp_secret_with_a_service_account(gcp):
    gcp.add_version("llmp-test", "provider-openai", "sk-from-gcp")
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == "sk-from-gcp"
    assert ("POST", "/token") in gcp.requests  # the signed JWT was exchanged for a token
    assert (
        "GET",
        "/v1/projects/llmp-test/secrets/provider-openai/versions/latest:access",
    ) in gcp.requests


def test_a_pinned_gcp_version_stays_put_while_the_latest_moves(gcp):
    gcp.add_version("llmp-test", "provider-openai", "sk-v1")
    gcp.add_version("llmp-test", "provider-openai", "sk-v2")
    assert resolve_secret("gcp-sm:llmp-test/provider-openai#1") == "sk-v1"
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == "sk-v2"


def test_a_gcp_rotation_is_picked_up_after_the_ttl(gcp, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 0.5
    gcp.add_version("llmp-test", "provider-openai", "sk-old")
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == "sk-old"
    gcp.add_version("llmp-test", "provider-openai", "sk-new")
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == "sk-old"
    time.sleep(0.6)
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == "sk-new"


def test_an_expired_gcp_token_is_refreshed_on_the_401(gcp):
    gcp.add_version("llmp-test", "provider-openai", "sk-1")
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == "sk-1"
    gcp.revoke_tokens()
    invalidate_secret("gcp-sm:llmp-test/provider-openai")
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == "sk-1"
    assert gcp.tokens_issued == 2


def test_a_missing_gcp_secret_names_the_reference(gcp):
    with pytest.raises(SecretNotFound, match="GCP secret llmp-test/provider-absent does not"):
        resolve_secret("gcp-sm:llmp-test/provider-absent")


def test_during_a_gcp_outage_the_cached_value_serves_until_its_ttl(gcp, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 1.0
    gcp.add_version("llmp-test", "provider-openai", RAW_KEY)
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == RAW_KEY
    gcp.down = True
    assert resolve_secret("gcp-sm:llmp-test/provider-openai") == RAW_KEY
    time.sleep(1.1)
    with pytest.raises(SecretNotFound, match=r"provider-openai cannot be read \(HTTP 503\)") as c:
        resolve_secret("gcp-sm:llmp-test/provider-openai")
    assert RAW_KEY not in str(c.value)


# --------------------------------------------------------------------------- HashiCorp Vault


def test_it_reads_a_vault_key_signing_in_with_approle(vault):
    vault.put("secret/llm/providers", {"openai": "sk-from-vault", "azure": "az-from-vault"})
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-from-vault"
    assert resolve_secret("vault:secret/llm/providers#azure") == "az-from-vault"
    assert vault.requests.count(("GET", "/v1/secret/data/llm/providers")) == 1  # one cached map
    assert vault.requests[0] == ("POST", "/v1/auth/approle/login")


def test_a_vault_rotation_is_picked_up_after_the_ttl(vault, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 0.5
    vault.put("secret/llm/providers", {"openai": "sk-old"})
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-old"
    vault.put("secret/llm/providers", {"openai": "sk-new"})
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-old"
    time.sleep(0.6)
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-new"


def test_it_signs_in_to_vault_with_kubernetes_auth(vault, settings, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(vault.kubernetes_jwt)
    settings.LLMP_VAULT_AUTH = "kubernetes"
    settings.LLMP_VAULT_KUBERNETES_ROLE = vault.kubernetes_role
    settings.LLMP_VAULT_KUBERNETES_TOKEN_FILE = str(token_file)
    vault.put("secret/llm/providers", {"openai": "sk-k8s"})
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-k8s"
    assert ("POST", "/v1/auth/kubernetes/login") in vault.requests


def test_it_reads_vault_with_a_token(vault, settings):
    settings.LLMP_VAULT_AUTH = "token"
    settings.LLMP_VAULT_TOKEN = vault.issue_token()
    vault.put("secret/llm/providers", {"openai": "sk-token"})
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-token"
    assert not any(path.startswith("/v1/auth/") for _, path in vault.requests)


def test_a_revoked_vault_token_is_replaced_by_signing_in_again(vault):
    vault.put("secret/llm/providers", {"openai": "sk-1"})
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-1"
    vault.revoke_tokens()
    vault.put("secret/llm/providers", {"openai": "sk-2"})
    invalidate_secret("vault:secret/llm/providers#openai")
    assert resolve_secret("vault:secret/llm/providers#openai") == "sk-2"
    assert vault.requests.count(("POST", "/v1/auth/approle/login")) == 2


def test_a_wrong_approle_secret_id_is_a_clear_error(vault, settings):
    settings.LLMP_VAULT_SECRET_ID = RAW_KEY
    vault.put("secret/llm/providers", {"openai": "sk-unreachable"})
    with pytest.raises(SecretNotFound, match="Vault secret secret/llm/providers cannot be read"):
        resolve_secret("vault:secret/llm/providers#openai")


def test_a_missing_vault_key_does_not_leak_the_others(vault):
    vault.put("secret/llm/providers", {"openai": RAW_KEY})
    with pytest.raises(SecretNotFound, match="has no key 'azure'") as caught:
        resolve_secret("vault:secret/llm/providers#azure")
    assert RAW_KEY not in str(caught.value)
    with pytest.raises(SecretNotFound, match="secret/llm/absent does not exist"):
        resolve_secret("vault:secret/llm/absent#openai")


def test_during_a_vault_outage_the_cached_value_serves_until_its_ttl(vault, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 1.0
    vault.put("secret/llm/providers", {"openai": RAW_KEY})
    assert resolve_secret("vault:secret/llm/providers#openai") == RAW_KEY
    vault.down = True
    assert resolve_secret("vault:secret/llm/providers#openai") == RAW_KEY
    time.sleep(1.1)
    with pytest.raises(SecretNotFound, match="secret/llm/providers cannot be read") as caught:
        resolve_secret("vault:secret/llm/providers#openai")
    assert RAW_KEY not in str(caught.value)


async def test_aresolve_serves_a_cached_store_value_without_a_thread(vault, monkeypatch):
    vault.put("secret/llm/providers", {"openai": "sk-async"})
    assert await aresolve_secret("vault:secret/llm/providers#openai") == "sk-async"

    async def no_threads(*args, **kwargs):
        raise AssertionError("a cache hit must not hop to a thread")

    monkeypatch.setattr(secrets.asyncio, "to_thread", no_threads)
    assert await aresolve_secret("vault:secret/llm/providers#openai") == "sk-async"


def test_an_unreachable_azure_authority_is_a_clear_error(azure, settings):
    from tests.conftest import free_port

    settings.LLMP_AZURE_AUTHORITY_HOST = f"https://127.0.0.1:{free_port()}"
    azure.set_secret("openai-key", "sk-unreachable")
    with pytest.raises(SecretNotFound, match=r"llmp-kv/openai-key cannot be read \(sign-in"):
        resolve_secret("azure-kv:llmp-kv/openai-key")


@pytest.mark.parametrize(
    ("setting", "ref"),
    [
        ("LLMP_AZURE_KEYVAULT_URL", "azure-kv:llmp-kv/openai-key"),
        ("LLMP_GCP_SECRETMANAGER_URL", "gcp-sm:llmp-test/provider-openai"),
        ("LLMP_VAULT_ADDR", "vault:secret/llm/providers#openai"),
    ],
)
def test_an_unreachable_store_is_a_clear_error(setting, ref, azure, gcp, vault, settings):
    from tests.conftest import free_port

    setattr(settings, setting, f"https://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(SecretNotFound, match="cannot be read") as caught:
        resolve_secret(ref)
    assert ref.partition(":")[2].partition("#")[0] in str(caught.value)
    assert time.monotonic() - started < 10  # seconds, not a hung request


# --------------------------------------------------------------------------- a provider's 401


@pytest.mark.parametrize("store", ["azure", "gcp", "vault"])
async def test_a_provider_rejecting_a_rotated_key_gets_the_new_one_from_the_store_at_once(
    store, request
):
    server = request.getfixturevalue(store)
    put, ref = {
        "azure": (lambda v: server.set_secret("openai-key", v), "azure-kv:llmp-kv/openai-key"),
        "gcp": (
            lambda v: server.add_version("llmp-test", "provider-openai", v),
            "gcp-sm:llmp-test/provider-openai",
        ),
        "vault": (
            lambda v: server.put("secret/llm/providers", {"openai": v}),
            "vault:secret/llm/providers#openai",
        ),
    }[store]
    put("sk-before-rotation")
    assert await aresolve_secret(ref) == "sk-before-rotation"  # cached for 300 s
    put("sk-after-rotation")
    with OpenAIUpstream() as upstream:
        upstream.required_key = "sk-after-rotation"
        adapter = OpenAICompatibleAdapter(
            ProviderConfig(name="p", kind="openai", base_url=upstream.base_url, api_key_ref=ref)
        )
        try:
            result = await adapter.complete(
                ChatRequest(model="m", messages=[ChatMessage("user", "hello")])
            )
        finally:
            await adapter.aclose()
        assert result.content == "hello"
        assert [r.headers["authorization"] for r in upstream.requests] == [
            "Bearer sk-before-rotation",
            "Bearer sk-after-rotation",
        ]


# --------------------------------------------------------------------------- platform secrets


def _start_settings(
    env: dict[str, str],
    tmp: Path | None = None,
    show: str = "[s.SECRET_KEY, s.LLMP_SUBJECT_HMAC_KEY]",
) -> subprocess.CompletedProcess:
    """Load the settings in a new process (as a start does) and print ``show`` as JSON."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("LLMP_", "SECRET_KEY", "DATABASE_", "VAULT_", "AZURE_", "GOOGLE_", "GCE_")
        )
    }
    if tmp is not None:
        base["LLMP_DATA_DIR"] = str(tmp)
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({show}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "DJANGO_SETTINGS_MODULE": "llmplatform.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_platform_secrets_are_read_from_a_store_at_start_up(vault, ca, tmp_path):
    platform_key = "k7Q2x9-platform-secret-key-from-vault-0f3a8c1d5e"
    hmac_key = "hmac-key-from-vault-a1b2c3d4e5f60718293a4b5c"
    vault.put("secret/platform/llmp", {"secret_key": platform_key, "hmac": hmac_key})
    env = {
        "LLMP_VAULT_ADDR": vault.url,
        "LLMP_SECRETS_CA_BUNDLE": str(ca.ca_file),
        "LLMP_VAULT_AUTH": "approle",
        "LLMP_VAULT_ROLE_ID": vault.role_id,
        "LLMP_VAULT_SECRET_ID": vault.secret_id,
        # Not in LLMP_SECRET_VAULT_PATHS: that list confines providers, not the operator.
        "SECRET_KEY_REF": "vault:secret/platform/llmp#secret_key",
        "LLMP_SUBJECT_HMAC_KEY_REF": "vault:secret/platform/llmp#hmac",
    }
    result = _start_settings(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [platform_key, hmac_key]
    assert not (tmp_path / "secret_key").exists()  # nothing generated or written to disk
    assert platform_key not in result.stderr


def test_the_database_password_and_master_key_come_from_gcp_at_start_up(gcp, ca, tmp_path):
    master_key = "Jm9kq3Yw2w7bq0o2d8S1m4nPq6rT9vXy1zA3bC5dE7g="
    gcp.add_version("llmp-test", "database-password", "db-password-from-gcp")
    gcp.add_version("llmp-test", "master-key", master_key)
    env = {
        "LLMP_GCP_SECRETMANAGER_URL": gcp.url,
        "LLMP_GCP_CREDENTIALS_FILE": str(gcp.credentials_file),
        "LLMP_SECRETS_CA_BUNDLE": str(ca.ca_file),
        "DATABASE_URL": "postgres://llmp@127.0.0.1:5432/llmp",
        "DATABASE_PASSWORD_REF": "gcp-sm:llmp-test/database-password",
        "LLMP_MASTER_KEY_REF": "gcp-sm:llmp-test/master-key#1",
    }
    result = _start_settings(
        env, tmp_path, show="[s.DATABASES['default']['PASSWORD'], s.LLMP_MASTER_KEY]"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        "db-password-from-gcp",
        master_key,
    ]
    assert not (tmp_path / "master_key").exists()


def test_on_gcp_the_metadata_server_signs_the_platform_in_at_start_up(gcp, ca, tmp_path):
    # google-auth reads GCE_METADATA_HOST when it is imported: a new process, as a start is.
    gcp.add_version("llmp-test", "secret-key", "k7Q2x9-secret-key-via-the-metadata-server-0f3a")
    with MetadataServer(gcp=gcp) as metadata:
        env = {
            "LLMP_GCP_SECRETMANAGER_URL": gcp.url,
            "LLMP_SECRETS_CA_BUNDLE": str(ca.ca_file),
            "GCE_METADATA_HOST": f"127.0.0.1:{metadata.port}",
            "GCE_METADATA_IP": f"127.0.0.1:{metadata.port}",
            "CLOUDSDK_CONFIG": str(tmp_path / "no-gcloud"),  # no developer credentials
            "SECRET_KEY_REF": "gcp-sm:llmp-test/secret-key",
        }
        result = _start_settings(env, tmp_path, show="s.SECRET_KEY")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == (
        "k7Q2x9-secret-key-via-the-metadata-server-0f3a"
    )
    assert any(path.endswith("/service-accounts/default/token") for _, path in metadata.requests)


def test_a_platform_secret_given_twice_stops_the_start(tmp_path):
    result = _start_settings(
        {"SECRET_KEY": "x" * 40, "SECRET_KEY_REF": "vault:secret/platform/llmp#k"}, tmp_path
    )
    assert result.returncode != 0
    assert "set SECRET_KEY or SECRET_KEY_REF, not both" in result.stderr


def test_an_unreadable_platform_secret_stops_the_start_naming_only_the_reference(
    vault, ca, tmp_path
):
    vault.put("secret/platform/llmp", {"secret_key": RAW_KEY})
    env = {
        "LLMP_VAULT_ADDR": vault.url,
        "LLMP_SECRETS_CA_BUNDLE": str(ca.ca_file),
        "LLMP_VAULT_AUTH": "approle",
        "LLMP_VAULT_ROLE_ID": vault.role_id,
        "LLMP_VAULT_SECRET_ID": vault.secret_id,
        "SECRET_KEY_REF": "vault:secret/platform/llmp#wrong_key",
    }
    result = _start_settings(env, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY_REF: Vault secret secret/platform/llmp has no key 'wrong_key'" in (
        result.stderr
    )
    assert RAW_KEY not in result.stderr + result.stdout


# --------------------------------------------------------------------------- never logged


def test_no_store_value_or_sign_in_credential_is_logged(azure, gcp, vault, settings, caplog):
    caplog.set_level(logging.DEBUG)
    azure.set_secret("openai-key", RAW_KEY)
    gcp.add_version("llmp-test", "provider-openai", RAW_KEY)
    vault.put("secret/llm/providers", {"openai": RAW_KEY})
    for ref in (
        "azure-kv:llmp-kv/openai-key",
        "gcp-sm:llmp-test/provider-openai",
        "vault:secret/llm/providers#openai",
    ):
        assert resolve_secret(ref) == RAW_KEY
    with pytest.raises(SecretNotFound):
        resolve_secret("vault:secret/llm/providers#absent")
    settings.LLMP_VAULT_SECRET_ID = "wrong-secret-id"
    with pytest.raises(SecretNotFound):
        resolve_secret("vault:secret/llm/providers#openai")

    assert caplog.records  # the libraries did log (urllib3 connections, sign-ins)
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for value in (RAW_KEY, azure.client_secret, vault.secret_id, "wrong-secret-id"):
        assert value not in logged
