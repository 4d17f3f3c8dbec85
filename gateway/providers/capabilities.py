"""What a provider does not accept, declared by the operator in ``Provider.extra``::

    extra: {"unsupported": ["tools", "image_url", "embeddings"]}

A request that uses one of them is refused before any call with a 400 naming the part
(``UnsupportedByProvider``), never sent for the upstream to drop silently. The embedded model
(Gemma 3 270M through llama.cpp, written as a plain dialogue) is declared this way by
``bootstrap_demo``: it has no tool calling, reads no images, audio or files and makes one
choice (it does make embeddings: ``llmplatform.local_model_server``). What a kind can never
carry (``KIND_UNSUPPORTED``: Anthropic's single choice, no logprobs, audio, files or
embeddings; Gemini's and Vertex's no logprobs or files) is added to what its operator declares.
Adapters refuse on their own what their wire cannot carry, value by value (Bedrock: see
``bedrock.py``).
"""

from __future__ import annotations

from typing import Any

from gateway.providers.base import ChatMessage, ProviderConfig, UnsupportedByProvider

FEATURES = (
    "tools",
    "image_url",
    "input_audio",
    "file",
    "n",
    "logprobs",
    "response_format",
    "embeddings",
)
# What the embedded model does not do (bootstrap_demo declares it on the "local" provider).
LOCAL_MODEL_UNSUPPORTED = ["tools", "image_url", "input_audio", "file", "n"]
# What it declared before its server made embeddings: a demo database bootstrapped then is
# brought up to date (an operator's own change to the list is left alone).
LOCAL_MODEL_UNSUPPORTED_BEFORE_EMBEDDINGS = [*LOCAL_MODEL_UNSUPPORTED, "embeddings"]


def check_declaration(value: Any) -> list[str]:
    """``extra["unsupported"]`` as the operator wrote it: a list of known feature names.
    Raises ``ValueError`` naming what is wrong."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("must be a list of feature names")
    unknown = sorted(set(value) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown feature {unknown[0]!r}; known: {', '.join(FEATURES)}")
    return value


# What a provider kind's wire cannot carry at all, whatever the operator declares (the
# adapters refuse it too; here it is refused before admission, like a declared feature).
# Bedrock's refusals depend on the values (a text response_format, n=1) and stay in its adapter.
KIND_UNSUPPORTED: dict[str, frozenset[str]] = {
    "anthropic": frozenset({"n", "logprobs", "input_audio", "file", "embeddings"}),
    "gemini": frozenset({"logprobs", "file"}),
    "vertex": frozenset({"logprobs", "file"}),
}


def unsupported_for(kind: Any, extra: Any) -> frozenset[str]:
    """What a provider of ``kind`` with ``extra`` (as saved or as a config file has it) does
    not take: its kind's inherent refusals and what the operator declared."""
    value = extra.get("unsupported") if isinstance(extra, dict) else None
    declared = frozenset(value) if isinstance(value, list) else frozenset()
    inherent = KIND_UNSUPPORTED.get(kind) if isinstance(kind, str) else None
    return declared | inherent if inherent else declared


def unsupported(config: ProviderConfig) -> frozenset[str]:
    return unsupported_for(config.kind, config.extra)


def refuse_unsupported(
    config: ProviderConfig, messages: list[ChatMessage], extra: dict[str, Any]
) -> None:
    """Raise ``UnsupportedByProvider`` for the first part of a request the provider does not
    accept (``messages`` indexed as the client sent them)."""
    missing = unsupported(config)
    if not missing:
        return
    if "tools" in missing and extra.get("tools"):
        raise UnsupportedByProvider(
            "This model does not support tool calling; send the request without 'tools'.",
            param="tools",
        )
    if "n" in missing and (extra.get("n") or 1) > 1:
        raise UnsupportedByProvider("This model makes one choice per request; send n=1.", param="n")
    if "logprobs" in missing and extra.get("logprobs"):
        raise UnsupportedByProvider("This model does not return logprobs.", param="logprobs")
    if "response_format" in missing and extra.get("response_format"):
        raise UnsupportedByProvider(
            "This model does not support 'response_format'.", param="response_format"
        )
    for i, message in enumerate(messages):
        for j, part in message.media():
            if part["type"] in missing:
                raise UnsupportedByProvider(
                    f"This model does not accept {part['type']} content parts.",
                    param=f"messages[{i}].content[{j}]",
                )


def refuse_embeddings(config: ProviderConfig) -> None:
    if "embeddings" in unsupported(config):
        raise UnsupportedByProvider("This model does not serve embeddings.", param="model")
