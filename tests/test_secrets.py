"""The secrets resolver: env/file references, and AWS Secrets Manager against a real
AWS-compatible server (moto) on loopback, with the in-process cache and its invalidation."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest

from gateway import secrets
from gateway.secrets import (
    SecretNotFound,
    aresolve_secret,
    invalidate_secret,
    resolve_secret,
    validate_secret_ref,
)

RAW_KEY = "sk-live-THIS-MUST-NEVER-BE-PRINTED-1234567890"


@pytest.fixture(autouse=True)
def _fresh_resolver() -> Iterator[None]:
    secrets.clear_secret_cache()
    yield
    secrets.clear_secret_cache()


@pytest.fixture(autouse=True)
def _allowed(settings, tmp_path) -> None:
    # What an operator would set: the secrets directory mounted for this test, and the
    # Secrets Manager prefix provider keys are kept under.
    settings.LLMP_SECRET_FILE_DIRS = (str(tmp_path),)
    settings.LLMP_SECRET_AWS_PREFIXES = ("llmp/test/", "prod/llm")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "env:OPENAI_API_KEY",
        "file:/run/secrets/openai",
        "aws-sm:prod/llm/openai",
        "aws-sm:prod/llm/providers#openai",
        "aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/llm-AbCdEf#key",
    ],
)
def test_it_accepts_well_formed_references(ref):
    validate_secret_ref(ref)


@pytest.mark.parametrize(
    "ref",
    [
        RAW_KEY,
        f"plain {RAW_KEY}",
        f"sk-proj:{RAW_KEY}",
        "env:",
        "env:NOT-A-NAME",
        "file:relative/path",
        "file:",
        "aws-sm:",
        "aws-sm:has spaces",
        "aws-sm:name#",
        "vault:secret/data/x",
    ],
)
def test_it_rejects_malformed_references_without_echoing_them(ref):
    with pytest.raises(ValueError) as excinfo:
        validate_secret_ref(ref)
    assert RAW_KEY not in str(excinfo.value)
    if ref and ref not in {"env:", "file:", "aws-sm:"}:
        assert ref not in str(excinfo.value)


def test_resolving_a_raw_key_fails_without_leaking_it():
    with pytest.raises(SecretNotFound) as excinfo:
        resolve_secret(RAW_KEY)
    assert RAW_KEY not in str(excinfo.value)
    assert "plain-text keys are not accepted" in str(excinfo.value)


def test_an_empty_reference_resolves_to_an_empty_string():
    assert resolve_secret("") == ""


# --------------------------------------------------------------------------- env and file


def test_it_reads_an_environment_variable(monkeypatch):
    monkeypatch.setenv("PROVIDER_TEST_KEY", "value-from-env")
    assert resolve_secret("env:PROVIDER_TEST_KEY") == "value-from-env"


def test_it_reads_the_file_named_by_name_file(monkeypatch, tmp_path):
    path = tmp_path / "key"
    path.write_text("value-from-file\n")
    monkeypatch.delenv("PROVIDER_TEST_KEY", raising=False)
    monkeypatch.setenv("PROVIDER_TEST_KEY_FILE", str(path))
    assert resolve_secret("env:PROVIDER_TEST_KEY") == "value-from-file"


def test_the_variable_wins_over_name_file(monkeypatch, tmp_path):
    path = tmp_path / "key"
    path.write_text("from-file")
    monkeypatch.setenv("PROVIDER_TEST_KEY", "from-env")
    monkeypatch.setenv("PROVIDER_TEST_KEY_FILE", str(path))
    assert resolve_secret("env:PROVIDER_TEST_KEY") == "from-env"


def test_a_missing_environment_variable_is_not_found(monkeypatch):
    monkeypatch.delenv("PROVIDER_TEST_MISSING", raising=False)
    monkeypatch.delenv("PROVIDER_TEST_MISSING_FILE", raising=False)
    with pytest.raises(SecretNotFound, match="PROVIDER_TEST_MISSING"):
        resolve_secret("env:PROVIDER_TEST_MISSING")


def test_it_reads_a_secret_file_and_rereads_it_after_rotation(tmp_path):
    path = tmp_path / "openai"
    path.write_text("first\n")
    assert resolve_secret(f"file:{path}") == "first"
    path.write_text("second\n")
    assert resolve_secret(f"file:{path}") == "second"


def test_a_missing_secret_file_is_not_found(tmp_path):
    with pytest.raises(SecretNotFound, match="cannot be read"):
        resolve_secret(f"file:{tmp_path}/absent")


async def test_aresolve_reads_env_and_files(monkeypatch, tmp_path):
    monkeypatch.setenv("PROVIDER_TEST_KEY", "value-from-env")
    path = tmp_path / "key"
    path.write_text("value-from-file")
    assert await aresolve_secret("env:PROVIDER_TEST_KEY") == "value-from-env"
    assert await aresolve_secret(f"file:{path}") == "value-from-file"


# --------------------------------------------------------------------------- AWS Secrets Manager


@pytest.fixture
def aws(moto_endpoint, aws_region, settings):
    """Points the resolver (and a boto3 client for the test's own setup) at moto."""
    import boto3

    settings.LLMP_SECRETS_CACHE_SECONDS = 300
    return boto3.client("secretsmanager", region_name=aws_region, endpoint_url=moto_endpoint)


def new_secret(aws, value: str) -> str:
    name = f"llmp/test/{uuid.uuid4().hex}"
    aws.create_secret(Name=name, SecretString=value)
    return name


def test_it_reads_a_plain_string_secret(aws):
    name = new_secret(aws, "sk-upstream-plain")
    assert resolve_secret(f"aws-sm:{name}") == "sk-upstream-plain"


def test_it_reads_one_key_of_a_json_secret(aws):
    name = new_secret(aws, json.dumps({"openai": "sk-openai", "azure": "az-key"}))
    assert resolve_secret(f"aws-sm:{name}#openai") == "sk-openai"
    assert resolve_secret(f"aws-sm:{name}#azure") == "az-key"


def test_it_reads_a_secret_by_arn(aws):
    name = new_secret(aws, "by-arn")
    arn = aws.describe_secret(SecretId=name)["ARN"]
    assert resolve_secret(f"aws-sm:{arn}") == "by-arn"


def test_it_caches_until_invalidated(aws):
    name = new_secret(aws, "old-key")
    ref = f"aws-sm:{name}"
    assert resolve_secret(ref) == "old-key"

    aws.put_secret_value(SecretId=name, SecretString="new-key")
    assert resolve_secret(ref) == "old-key"  # served from the cache, no AWS call

    invalidate_secret(ref)
    assert resolve_secret(ref) == "new-key"


def test_invalidating_one_json_key_refetches_the_whole_secret(aws):
    name = new_secret(aws, json.dumps({"a": "a1", "b": "b1"}))
    assert resolve_secret(f"aws-sm:{name}#a") == "a1"
    aws.put_secret_value(SecretId=name, SecretString=json.dumps({"a": "a2", "b": "b2"}))
    assert resolve_secret(f"aws-sm:{name}#b") == "b1"  # same cached document

    invalidate_secret(f"aws-sm:{name}#a")
    assert resolve_secret(f"aws-sm:{name}#b") == "b2"


def test_the_cache_expires_after_its_ttl(aws, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 0.2
    name = new_secret(aws, "old-key")
    ref = f"aws-sm:{name}"
    assert resolve_secret(ref) == "old-key"
    aws.put_secret_value(SecretId=name, SecretString="new-key")
    assert resolve_secret(ref) == "old-key"
    time.sleep(0.3)
    assert resolve_secret(ref) == "new-key"


def test_a_zero_ttl_disables_the_cache(aws, settings):
    settings.LLMP_SECRETS_CACHE_SECONDS = 0
    name = new_secret(aws, "old-key")
    assert resolve_secret(f"aws-sm:{name}") == "old-key"
    aws.put_secret_value(SecretId=name, SecretString="new-key")
    assert resolve_secret(f"aws-sm:{name}") == "new-key"


def test_the_client_is_created_once(aws):
    name = new_secret(aws, "x")
    resolve_secret(f"aws-sm:{name}")
    client = secrets._client
    invalidate_secret(f"aws-sm:{name}")
    resolve_secret(f"aws-sm:{name}")
    assert client is not None
    assert secrets._client is client


def test_a_missing_aws_secret_is_not_found(aws):
    with pytest.raises(SecretNotFound, match="does not exist") as excinfo:
        resolve_secret("aws-sm:llmp/test/absent")
    assert "llmp/test/absent" in str(excinfo.value)
    assert excinfo.value.__cause__ is None


def test_a_missing_json_key_fails_without_leaking_the_secret(aws):
    name = new_secret(aws, json.dumps({"openai": RAW_KEY}))
    with pytest.raises(SecretNotFound, match="has no key 'azure'") as excinfo:
        resolve_secret(f"aws-sm:{name}#azure")
    assert RAW_KEY not in str(excinfo.value)


def test_a_json_key_of_a_non_json_secret_fails_without_leaking_it(aws):
    name = new_secret(aws, RAW_KEY)
    with pytest.raises(SecretNotFound, match="not a JSON object") as excinfo:
        resolve_secret(f"aws-sm:{name}#openai")
    assert RAW_KEY not in str(excinfo.value)
    # No chained JSONDecodeError, whose .doc would hold the secret.
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__


def test_an_unreachable_endpoint_is_reported_without_a_traceback_of_secrets(aws, settings):
    from tests.conftest import free_port

    settings.LLMP_AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SecretNotFound, match="cannot be read"):
        resolve_secret("aws-sm:llmp/test/anything")


async def test_aresolve_fetches_in_a_thread_on_a_miss_and_not_on_a_hit(aws, monkeypatch):
    name = new_secret(aws, json.dumps({"k": "v1"}))
    ref = f"aws-sm:{name}#k"
    threaded: list[str] = []
    real_to_thread = asyncio.to_thread

    async def recording_to_thread(func, *args, **kwargs):
        threaded.append(args[0])
        return await real_to_thread(func, *args, **kwargs)

    monkeypatch.setattr(secrets.asyncio, "to_thread", recording_to_thread)

    assert await aresolve_secret(ref) == "v1"
    assert threaded == [ref]

    assert await aresolve_secret(ref) == "v1"
    assert threaded == [ref]  # the hit returned without a thread hop

    aws.put_secret_value(SecretId=name, SecretString=json.dumps({"k": "v2"}))
    invalidate_secret(ref)
    assert await aresolve_secret(ref) == "v2"
    assert threaded == [ref, ref]
