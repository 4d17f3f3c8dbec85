"""The OpenAPI description of the Anthropic Messages door (``gateway.api.messages``): its
request and reply in Anthropic's shape, and its errors in Anthropic's error shape. Merged into
the API's schema by ``gateway.api.schema.described_patterns``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from gateway.api.messages_request import IMAGE_TYPES, MAX_STOP_SEQUENCES
from gateway.api.schema import (
    _CACHE_CONTROL,
    _GPC,
    JSON,
    SSE,
    ServerSentEventSerializer,
    _Described,
    _scope,
)
from gateway.models import ApiKey


class AnthropicErrorObjectSerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=[
            "invalid_request_error",
            "authentication_error",
            "permission_error",
            "not_found_error",
            "request_too_large",
            "rate_limit_error",
            "api_error",
            "overloaded_error",
        ]
    )
    message = serializers.CharField(help_text="What went wrong, for a human.")


class AnthropicErrorSerializer(serializers.Serializer):
    """Anthropic's error shape; the platform's reason is in the `x-llmp-error-code` header."""

    type = serializers.ChoiceField(choices=["error"])
    error = AnthropicErrorObjectSerializer()

    class Meta:
        ref_name = "AnthropicError"


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(AnthropicErrorSerializer, description=description)


_TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {
        "type": {"type": "string", "enum": ["text"]},
        "text": {"type": "string"},
        "cache_control": {"type": "object", "description": "Accepted and ignored."},
    },
}
_IMAGE_BLOCK = {
    "type": "object",
    "required": ["type", "source"],
    "properties": {
        "type": {"type": "string", "enum": ["image"]},
        "source": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "media_type", "data"],
                    "properties": {
                        "type": {"type": "string", "enum": ["base64"]},
                        "media_type": {"type": "string", "enum": list(IMAGE_TYPES)},
                        "data": {"type": "string"},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "url"],
                    "properties": {
                        "type": {"type": "string", "enum": ["url"]},
                        "url": {"type": "string", "description": "An http(s) URL."},
                    },
                },
            ]
        },
    },
}
_TOOL_USE_BLOCK = {
    "type": "object",
    "required": ["type", "id", "name", "input"],
    "properties": {
        "type": {"type": "string", "enum": ["tool_use"]},
        "id": {"type": "string"},
        "name": {"type": "string"},
        "input": {"type": "object"},
    },
}
_TOOL_RESULT_BLOCK = {
    "type": "object",
    "required": ["type", "tool_use_id"],
    "properties": {
        "type": {"type": "string", "enum": ["tool_result"]},
        "tool_use_id": {"type": "string"},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
        "is_error": {"type": "boolean"},
    },
}
_REQUEST_PROPERTIES: dict[str, Any] = {
    "model": {"type": "string", "maxLength": 64, "description": "A model alias."},
    "messages": {
        "type": "array",
        "minItems": 1,
        "maxItems": 2048,
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant"]},
                "content": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "oneOf": [
                                    _TEXT_BLOCK,
                                    _IMAGE_BLOCK,
                                    _TOOL_USE_BLOCK,
                                    _TOOL_RESULT_BLOCK,
                                ]
                            },
                        },
                    ]
                },
            },
        },
    },
    "max_tokens": {"type": "integer", "minimum": 1},
    "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
    "stop_sequences": {
        "type": "array",
        "maxItems": MAX_STOP_SEQUENCES,
        "items": {"type": "string", "minLength": 1},
    },
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "metadata": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "user_id": {
                "type": "string",
                "maxLength": 256,
                "description": "The end user's id (consent, erasure, per-user limits).",
            }
        },
    },
    "stream": {"type": "boolean"},
    "tools": {
        "type": "array",
        "maxItems": 128,
        "items": {
            "type": "object",
            "required": ["name", "input_schema"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "input_schema": {"type": "object"},
            },
        },
    },
    "tool_choice": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["auto", "any", "tool", "none"]},
            "name": {"type": "string"},
            "disable_parallel_tool_use": {"type": "boolean"},
        },
    },
    "output_config": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "format": {
                "type": "object",
                "required": ["type", "schema"],
                "properties": {
                    "type": {"type": "string", "enum": ["json_schema"]},
                    "schema": {"type": "object"},
                },
            }
        },
    },
    "cache_control": {"type": "object", "description": "Accepted and ignored."},
    "service_tier": {"type": "string", "description": "Accepted and ignored."},
}
MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "additionalProperties": False,
    "properties": _REQUEST_PROPERTIES,
}
COUNT_TOKENS_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": {k: v for k, v in _REQUEST_PROPERTIES.items() if k != "stream"},
}
MESSAGE = {
    "type": "object",
    "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["message"]},
        "role": {"type": "string", "enum": ["assistant"]},
        "model": {"type": "string"},
        "content": {"type": "array", "items": {"oneOf": [_TEXT_BLOCK, _TOOL_USE_BLOCK]}},
        "stop_reason": {
            "type": "string",
            "enum": ["end_turn", "max_tokens", "tool_use", "refusal"],
        },
        "stop_sequence": {"type": "string", "nullable": True},
        "usage": {
            "type": "object",
            "required": ["input_tokens", "output_tokens"],
            "properties": {
                "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"},
            },
        },
    },
}
_ANTHROPIC_VERSION = OpenApiParameter(
    "anthropic-version",
    # An HTTP field value (RFC 9110), as _CACHE_CONTROL: the server refuses other bytes before
    # any view sees them.
    {"type": "string", "pattern": "^[\t\x20-\x7e]*$"},
    OpenApiParameter.HEADER,
    required=False,
    description="Accepted whatever its value (`anthropic-beta` is ignored).",
)
_AUTH = {
    401: _error("A missing, malformed, unknown, wrong, expired or revoked key (all alike)."),
    403: _error("The key lacks the `chat` scope, or is used from an address it may not be."),
}
_BODY_ERRORS = {
    400: _error(
        "The body is not a Messages request the gateway serves (what it refuses and why is in "
        "the message: `top_k`, `thinking`, server tools, other block kinds), or the platform "
        "refused it: the tier's bounds, a prompt injection, personal data its policy blocks."
    ),
    413: _error("The body is over `LLMP_MAX_BODY_BYTES`."),
}
_MESSAGES_ERRORS = {
    **_BODY_ERRORS,
    **_AUTH,
    404: _error("An unknown alias, or one the tier does not allow."),
    429: _error("A rate limit or budget (see `Retry-After`)."),
    502: _error("The provider failed or answered badly."),
    503: _error("The provider is unreachable or every circuit is open; the service is busy."),
    504: _error("The provider timed out."),
}
_SSE_MESSAGES = OpenApiResponse(
    ServerSentEventSerializer,
    description='With `"stream": true`: Anthropic\'s named events `message_start`, then per '
    "content block `content_block_start`, `content_block_delta` (`text_delta` or "
    "`input_json_delta`) and `content_block_stop`, then `message_delta` (stop reason, usage) "
    "and `message_stop`. A failure after the stream started is a final `error` event.",
)


class MessagesDescription(_Described):
    @extend_schema(
        operation_id="createMessage",
        tags=["chat"],
        summary="Create a message (Anthropic's Messages API; JSON or SSE)",
        description=_scope(ApiKey.Scope.CHAT.value) + " The key may also be sent as `x-api-key`.",
        request={JSON: MESSAGES_REQUEST},
        parameters=[_GPC, _CACHE_CONTROL, _ANTHROPIC_VERSION],
        examples=[
            OpenApiExample(
                "Say hello",
                request_only=True,
                value={
                    "model": "default",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": "Say hello"}],
                },
            )
        ],
        responses={
            (200, JSON): OpenApiResponse(MESSAGE, "The answer."),
            (200, SSE): _SSE_MESSAGES,
            **_MESSAGES_ERRORS,
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


class CountTokensDescription(_Described):
    @extend_schema(
        operation_id="countMessageTokens",
        tags=["chat"],
        summary="Estimate a Messages request's input tokens (no model is called)",
        description=_scope(ApiKey.Scope.CHAT.value)
        + " About four characters a token over everything the request sends the model.",
        request={JSON: COUNT_TOKENS_REQUEST},
        parameters=[_ANTHROPIC_VERSION],
        responses={
            200: OpenApiResponse(
                {
                    "type": "object",
                    "required": ["input_tokens"],
                    "properties": {"input_tokens": {"type": "integer"}},
                },
                "The estimate.",
            ),
            **_BODY_ERRORS,
            **_AUTH,
            404: _error("An unknown alias, or one the tier does not allow."),
            503: _error("The service is busy; retry after `Retry-After` seconds."),
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


DESCRIPTIONS: dict[str, type[APIView]] = {
    "messages": MessagesDescription,
    "messages-count-tokens": CountTokensDescription,
}
