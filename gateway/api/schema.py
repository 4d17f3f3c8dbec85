"""The OpenAPI 3 description of the API routes (drf-spectacular), served at ``/api/schema/``.

The API views are plain async Django views; the hot ones take the lean ASGI path
(``llmplatform.fastpath``), and routing them through DRF would cost every request. So requests
never touch this module: the schema is generated from *schema-only* DRF views, one per route of
``gateway.api.urls`` and built from its URL patterns, so the documented paths are exactly the
served ones and a route added without a description here fails schema generation (and the
deploy check, and the tests) instead of going undocumented.

The chat request body is described by the serializer that validates it
(``gateway.pipeline.validate.ChatCompletionSerializer``), so limits and choices cannot drift.
Every error status a route can answer is documented with OpenAI's error shape.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from gateway.models import ApiKey
from gateway.pipeline.validate import PASSTHROUGH_PARAMS, ChatCompletionSerializer
from privacy.models import ConsentRecord, SubjectRequest

API_KEY_SCHEME = "ApiKey"
SSE = "text/event-stream"
JSON = "application/json"

# --- errors ----------------------------------------------------------------------------------


class ErrorObjectSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, for a human.")
    type = serializers.CharField(
        help_text="invalid_request_error, permission_error, requests, insufficient_quota, "
        "api_error or server_error."
    )
    param = serializers.CharField(
        allow_null=True, help_text="The offending field (e.g. messages[1].role), if any."
    )
    code = serializers.CharField(allow_null=True, help_text="A stable, machine-readable code.")


class ErrorSerializer(serializers.Serializer):
    """OpenAI's error shape; every error of the API has it."""

    error = ErrorObjectSerializer()


def _error(codes: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=f"Error, `code` one of: {codes}.")


_BODY_ERRORS = "`invalid_json`, `invalid_utf8`, `invalid_value`, `unknown_parameter`"
_AUTH_ERRORS = {
    401: _error(
        "`invalid_api_key` (missing, malformed, unknown, wrong, expired or revoked key; all alike)"
    ),
    403: _error("`insufficient_permissions` (the key lacks the route's scope), `ip_not_allowed`"),
}
_UNAVAILABLE = _error("`database_unavailable` (retry after `Retry-After` seconds)")
_TOO_LARGE = _error("`request_too_large` (over `LLMP_MAX_BODY_BYTES`)")
_CHAT_ERRORS = {
    400: _error(
        f"{_BODY_ERRORS}, `prompt_too_large`, `max_tokens_too_large`, "
        "`prompt_injection_detected`, `pii_detected`"
    ),
    **_AUTH_ERRORS,
    404: _error("`model_not_found` (unknown alias, or one the tier does not allow)"),
    413: _TOO_LARGE,
    429: _error(
        "`rate_limit_exceeded`, `tokens_rate_limit_exceeded`, `budget_exceeded` (see `Retry-After`)"
    ),
    502: _error("`upstream_bad_response`, `upstream_server_error`, `upstream_auth_failed`"),
    503: _error(
        "`upstream_unavailable`, `circuit_open`, `limits_unavailable`, "
        "`pii_detector_unavailable`, `database_unavailable`"
    ),
    504: _error("`upstream_timeout`"),
}

# --- chat ------------------------------------------------------------------------------------


class ContentFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "gateway.pipeline.validate.ContentField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["type", "text"],
                                "properties": {
                                    "type": {"type": "string", "enum": ["text"]},
                                    "text": {"type": "string"},
                                },
                            },
                            {
                                "type": "object",
                                "required": ["type", "image_url"],
                                "properties": {
                                    "type": {"type": "string", "enum": ["image_url"]},
                                    "image_url": {
                                        "type": "object",
                                        "required": ["url"],
                                        "properties": {
                                            "url": {
                                                "type": "string",
                                                "description": (
                                                    "An http(s) URL or a data:image/ URL."
                                                ),
                                            },
                                            "detail": {
                                                "type": "string",
                                                "enum": ["auto", "low", "high"],
                                            },
                                        },
                                    },
                                },
                            },
                            {
                                "type": "object",
                                "required": ["type", "input_audio"],
                                "properties": {
                                    "type": {"type": "string", "enum": ["input_audio"]},
                                    "input_audio": {
                                        "type": "object",
                                        "required": ["data", "format"],
                                        "properties": {
                                            "data": {"type": "string"},
                                            "format": {"type": "string", "enum": ["wav", "mp3"]},
                                        },
                                    },
                                },
                            },
                            {
                                "type": "object",
                                "required": ["type", "file"],
                                "properties": {
                                    "type": {"type": "string", "enum": ["file"]},
                                    "file": {
                                        "type": "object",
                                        "properties": {
                                            "file_data": {"type": "string"},
                                            "file_id": {"type": "string"},
                                            "filename": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        ]
                    },
                },
            ],
            "description": "A string, or an array of content parts. Image, audio and file "
            "parts are accepted in user messages only, by providers that take "
            "them (others: 400 `unsupported_by_provider` naming the part).",
        }


class StopFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "gateway.pipeline.validate.StopField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        }


class _RequestMeta:
    ref_name = "ChatCompletionRequest"


# The validating serializer plus the OpenAI parameters it lets through uninterpreted.
ChatCompletionRequestSerializer = type(
    "ChatCompletionRequestSerializer",
    (ChatCompletionSerializer,),
    {
        "__doc__": "OpenAI's chat completion request. The OpenAI parameters the gateway does "
        "not interpret are passed through to OpenAI-compatible upstreams as given.",
        "Meta": _RequestMeta,
        **{
            name: serializers.JSONField(
                required=False, help_text="Passed through to OpenAI-compatible upstreams."
            )
            for name in sorted(PASSTHROUGH_PARAMS)
        },
    },
)


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)


class ToolCallFunctionSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(allow_blank=True, help_text="A JSON object, as text.")


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = ToolCallFunctionSerializer()


class AssistantMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField(allow_blank=True, allow_null=True)
    refusal = serializers.CharField(allow_null=True)
    tool_calls = ToolCallSerializer(many=True, required=False)


class ChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = AssistantMessageSerializer()
    logprobs = serializers.JSONField(allow_null=True)
    finish_reason = serializers.CharField(help_text="stop, length, tool_calls or content_filter.")


class ChatCompletionSerializerOut(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["chat.completion"])
    created = serializers.IntegerField()
    model = serializers.CharField(help_text="The alias that was asked for.")
    choices = ChoiceSerializer(many=True)
    usage = UsageSerializer()
    system_fingerprint = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(
        choices=["degraded"],
        required=False,
        help_text="Present when every provider failed and the alias's degraded answer was served.",
    )

    class Meta:
        ref_name = "ChatCompletion"


class EmbeddingsRequestSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=64)
    input = serializers.JSONField(
        help_text="A string or a list of up to 2048 strings (token arrays are refused: "
        "400 `unsupported_input`)."
    )
    dimensions = serializers.IntegerField(required=False, min_value=1, max_value=16384)
    encoding_format = serializers.ChoiceField(choices=["float", "base64"], required=False)
    user = serializers.CharField(required=False, max_length=256)

    class Meta:
        ref_name = "EmbeddingsRequest"


class EmbeddingSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["embedding"])
    index = serializers.IntegerField()
    embedding = serializers.JSONField(
        help_text="A list of floats, or base64 of little-endian float32 with "
        "encoding_format=base64."
    )


class EmbeddingsUsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)


class EmbeddingsResponseSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    # A declared field (DRF's metaclass takes it off the class); the stubs see Serializer.data.
    data = EmbeddingSerializer(many=True)  # type: ignore[assignment]
    model = serializers.CharField()
    usage = EmbeddingsUsageSerializer()

    class Meta:
        ref_name = "Embeddings"


class SimpleChatRequestSerializer(serializers.Serializer):
    prompt = serializers.CharField(help_text="Sent as one user message.")
    model = serializers.CharField(required=False, default="default", max_length=64)
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)

    class Meta:
        ref_name = "SimpleChatRequest"


class SimpleChatResponseSerializer(serializers.Serializer):
    response = serializers.CharField(allow_blank=True)
    model = serializers.CharField()
    usage = UsageSerializer()
    status = serializers.ChoiceField(choices=["degraded"], required=False)

    class Meta:
        ref_name = "SimpleChatResponse"


class ServerSentEventSerializer(serializers.Serializer):
    """One server-sent event (OpenAPI before 3.2 describes an event stream per event)."""

    # A declared field (DRF's metaclass takes it off the class); the stubs see Serializer.data.
    data = serializers.CharField(  # type: ignore[assignment]
        allow_blank=True, help_text="One JSON document, or `[DONE]` at the end."
    )
    event = serializers.CharField(required=False)

    class Meta:
        ref_name = "ServerSentEvent"


_SSE_OPENAI = OpenApiResponse(
    ServerSentEventSerializer,
    description='With `"stream": true`: server-sent events, each `data: <chat.completion.chunk '
    "JSON>`, then `data: [DONE]`. A failure after the stream started is a final "
    '`data: {"error": {...}}` event.',
)
_SSE_SIMPLE = OpenApiResponse(
    ServerSentEventSerializer,
    description='Server-sent events `data: {"delta": {"text": "..."}}`, then '
    '`data: {"finish_reason": ..., "usage": {...}}` and `data: [DONE]`.',
)
_GPC = OpenApiParameter(
    "Sec-GPC",
    str,
    OpenApiParameter.HEADER,
    required=False,
    enum=["1"],
    description="Global Privacy Control: with `user` set, records that user's opt-out of "
    "sale and sharing.",
)
_CACHE_CONTROL = OpenApiParameter(
    # An HTTP field value (RFC 9110): visible ASCII, spaces and tabs. The server refuses a
    # header with other bytes (NUL, line breaks) before any view sees it.
    "Cache-Control",
    {"type": "string", "pattern": "^[\t\x20-\x7e]*$"},
    OpenApiParameter.HEADER,
    required=False,
    description="`no-cache` skips the response cache lookup, `no-store` also keeps the answer "
    "out of it.",
)

# --- the Responses API and legacy completions -----------------------------------------------


class ResponsesRequestSerializer(serializers.Serializer):
    """OpenAI's Responses API request, run through the chat pipeline (stateless)."""

    model = serializers.CharField(max_length=64)
    input = serializers.JSONField(
        help_text="A string, or a list of items: messages (`role` user, assistant, system or "
        "developer; `input_text`, `input_image`, `input_file`, `input_audio` parts, "
        "`output_text`/`refusal` parts in assistant turns sent back), `function_call` and "
        "`function_call_output` items. Other item types: 400 naming the item."
    )
    instructions = serializers.CharField(required=False, allow_null=True)
    tools = serializers.JSONField(
        required=False,
        help_text="Function tools (`{type: function, name, description, parameters, strict}`); "
        "built-in tools (web_search, file_search, ...): 400 naming `tools[i].type`.",
    )
    tool_choice = serializers.JSONField(
        required=False, help_text='auto, none, required or `{"type": "function", "name": ...}`.'
    )
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    text = serializers.JSONField(
        required=False,
        help_text="`{format: {type: text | json_object | json_schema, name, schema, strict}}`.",
    )
    max_output_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    metadata = serializers.JSONField(required=False, help_text="Up to 16 string pairs.")
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)
    safety_identifier = serializers.CharField(
        required=False, max_length=256, help_text="Taken as `user` when `user` is absent."
    )
    service_tier = serializers.JSONField(required=False, help_text="Passed to OpenAI upstreams.")
    stream = serializers.BooleanField(required=False, allow_null=True)
    stream_options = serializers.JSONField(required=False, help_text="`include_obfuscation`.")
    store = serializers.BooleanField(
        required=False, help_text="false (the default); true is refused (400)."
    )
    include = serializers.JSONField(
        required=False, help_text='Only `["reasoning.encrypted_content"]` (a no-op).'
    )
    truncation = serializers.CharField(required=False, help_text="Only `disabled`.")
    previous_response_id = serializers.CharField(
        required=False, help_text="Refused (400): the gateway keeps no responses."
    )
    reasoning = serializers.JSONField(required=False, help_text="Refused (400) when set.")
    background = serializers.BooleanField(required=False, help_text="true is refused (400).")

    class Meta:
        ref_name = "ResponsesRequest"


class ResponseObjectSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["response"])
    created_at = serializers.IntegerField()
    status = serializers.CharField(help_text="completed, or incomplete (see incomplete_details).")
    model = serializers.CharField(help_text="The alias that was asked for.")
    output = serializers.JSONField(
        help_text="`message` items (`output_text` and `refusal` parts) and `function_call` items."
    )
    usage = serializers.JSONField(
        help_text="`input_tokens`, `output_tokens`, `total_tokens` and their details."
    )
    incomplete_details = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    store = serializers.BooleanField()

    class Meta:
        ref_name = "Response"


class CompletionsRequestSerializer(serializers.Serializer):
    """OpenAI's legacy completions request: the prompt is sent as one user message."""

    model = serializers.CharField(max_length=64)
    prompt = serializers.JSONField(
        help_text="A string, or a list of up to 16 strings (one request each, `n` choices per "
        "prompt; not streamed). Token arrays: 400 `unsupported_input`."
    )
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=128)
    stop = serializers.JSONField(required=False, help_text="A string or up to 4 strings.")
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)
    stream = serializers.BooleanField(required=False, allow_null=True)
    stream_options = serializers.JSONField(required=False, help_text="`include_usage`.")
    seed = serializers.IntegerField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True)
    logit_bias = serializers.JSONField(required=False, help_text="As in chat.")
    suffix = serializers.CharField(required=False, help_text="Refused (400) when set.")
    echo = serializers.BooleanField(required=False, help_text="true is refused (400).")
    best_of = serializers.IntegerField(required=False, help_text="Above 1 is refused (400).")
    logprobs = serializers.IntegerField(required=False, help_text="Refused (400) when set.")

    class Meta:
        ref_name = "CompletionsRequest"


class CompletionChoiceSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True)
    index = serializers.IntegerField()
    logprobs = serializers.JSONField(allow_null=True)
    finish_reason = serializers.CharField(help_text="stop, length or content_filter.")


class CompletionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["text_completion"])
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = CompletionChoiceSerializer(many=True)
    usage = UsageSerializer()
    system_fingerprint = serializers.CharField(allow_null=True)

    class Meta:
        ref_name = "Completion"


_SSE_RESPONSES = OpenApiResponse(
    ServerSentEventSerializer,
    description='With `"stream": true`: named server-sent events (`event: <type>`, `data: '
    "<JSON with type and sequence_number>`): `response.created`, `response.in_progress`, per "
    "output item `response.output_item.added`, `response.content_part.added`, "
    "`response.output_text.delta`... `.done`, `response.content_part.done` (or "
    "`response.function_call_arguments.delta`... `.done`), `response.output_item.done`; then "
    "`response.completed` (or `response.incomplete`). A failure after the stream started is "
    "an `error` event and `response.failed`.",
)
_SSE_COMPLETIONS = OpenApiResponse(
    ServerSentEventSerializer,
    description='With `"stream": true`: `data: <text_completion chunk>` events, a usage chunk '
    "with `stream_options.include_usage`, then `data: [DONE]`.",
)

# --- models and cache ------------------------------------------------------------------------


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField()
    owned_by = serializers.CharField()
    doors = serializers.ListField(
        child=serializers.ChoiceField(
            choices=["chat.completions", "responses", "completions", "messages", "embeddings"]
        ),
        help_text="The routes this key may call the alias through (by its scopes, and what "
        "the alias's providers serve).",
    )

    class Meta:
        ref_name = "Model"


class ModelListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    # A declared field (DRF's metaclass takes it off the class); the stubs see Serializer.data.
    data = ModelSerializer(many=True)  # type: ignore[assignment]

    class Meta:
        ref_name = "ModelList"


class CacheInvalidationRequestSerializer(serializers.Serializer):
    model = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="One alias; omitted: all of the tenant's aliases.",
    )

    class Meta:
        ref_name = "CacheInvalidationRequest"


class CacheInvalidationSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["cache.invalidation"])
    model = serializers.CharField(allow_null=True)
    invalidated = serializers.BooleanField()

    class Meta:
        ref_name = "CacheInvalidation"


# --- privacy ---------------------------------------------------------------------------------

_PURPOSES = ConsentRecord.Purpose.values
_API_SOURCES = ["api"]


class ConsentDecisionSerializer(serializers.Serializer):
    granted = serializers.BooleanField()
    policy_version = serializers.CharField(allow_null=True)
    # A declared field (DRF's metaclass takes it off the class); the stubs see Field.source.
    source = serializers.CharField(allow_null=True)  # type: ignore[assignment]
    updated_at = serializers.DateTimeField(allow_null=True)


class ConsentPurposesSerializer(serializers.Serializer):
    store_conversations = ConsentDecisionSerializer()
    analytics = ConsentDecisionSerializer()
    sale_sharing = ConsentDecisionSerializer()


class ConsentStateSerializer(serializers.Serializer):
    user = serializers.CharField()
    do_not_sell = serializers.BooleanField()
    email_registered = serializers.BooleanField()
    policy_version = serializers.CharField(help_text="The tenant's current policy version.")
    consent = ConsentPurposesSerializer()

    class Meta:
        ref_name = "ConsentState"


class ConsentOneSerializer(serializers.Serializer):
    purpose = serializers.ChoiceField(choices=_PURPOSES)
    granted = serializers.BooleanField()
    policy_version = serializers.CharField(required=False, min_length=1, max_length=32)
    # A declared field (DRF's metaclass takes it off the class); the stubs see Field.source.
    source = serializers.ChoiceField(choices=_API_SOURCES, required=False)  # type: ignore[assignment]

    class Meta:
        ref_name = "ConsentDecisionRequest"


class ConsentFlagsSerializer(serializers.Serializer):
    store_conversations = serializers.BooleanField(required=False)
    analytics = serializers.BooleanField(required=False)
    sale_sharing = serializers.BooleanField(required=False)

    class Meta:
        ref_name = "ConsentFlags"


class ConsentManySerializer(serializers.Serializer):
    consents = ConsentFlagsSerializer(help_text="purpose: true/false, at least one.")
    policy_version = serializers.CharField(required=False, min_length=1, max_length=32)
    # A declared field (DRF's metaclass takes it off the class); the stubs see Field.source.
    source = serializers.ChoiceField(choices=_API_SOURCES, required=False)  # type: ignore[assignment]

    class Meta:
        ref_name = "ConsentDecisionsRequest"


_CONSENT_REQUEST = PolymorphicProxySerializer(
    component_name="ConsentRequest",
    serializers=[ConsentOneSerializer, ConsentManySerializer],
    resource_type_field_name=None,
)


class SubjectRegisterRequestSerializer(serializers.Serializer):
    email = serializers.EmailField(help_text="Stored encrypted; never echoed.")

    class Meta:
        ref_name = "SubjectRegisterRequest"


class SubjectRegisteredSerializer(serializers.Serializer):
    user = serializers.CharField()
    email_registered = serializers.BooleanField()

    class Meta:
        ref_name = "SubjectRegistered"


class SubjectRequestCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=SubjectRequest.Kind.values)
    law = serializers.ChoiceField(choices=SubjectRequest.Law.values, required=False, default="gdpr")

    class Meta:
        ref_name = "SubjectRequestCreate"


class SubjectRequestSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["privacy.subject_request"])
    id = serializers.CharField()
    kind = serializers.ChoiceField(choices=SubjectRequest.Kind.values)
    law = serializers.ChoiceField(choices=SubjectRequest.Law.values)
    state = serializers.ChoiceField(choices=SubjectRequest.State.values)
    received_at = serializers.DateTimeField()
    acknowledge_by = serializers.DateTimeField(allow_null=True)
    due_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "SubjectRequest"


_USER = OpenApiParameter(
    "user",
    {"type": "string", "minLength": 1, "maxLength": 256},
    OpenApiParameter.PATH,
    description="The tenant app's id of its end user (the chat API's `user`), 1-256 "
    "characters, no `/`.",
)
_PRIVACY_ERRORS = {**_AUTH_ERRORS, 503: _UNAVAILABLE}
_PRIVACY_BODY_ERRORS = {
    400: _error(f"{_BODY_ERRORS} (e.g. an unknown purpose, an invalid email)"),
    **_PRIVACY_ERRORS,
    413: _TOO_LARGE,
}

# --- schema-only views -----------------------------------------------------------------------


class ApiKeyAuthentication(BaseAuthentication):
    """Schema-only: names the bearer API key scheme (the views authenticate on their own)."""

    def authenticate(self, request):  # pragma: no cover - never serves a request
        raise NotImplementedError


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = API_KEY_SCHEME

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "llmp_<lookup>_<secret>",
            "description": "A tenant API key: `Authorization: Bearer llmp_...`.",
        }


class _Described(APIView):
    """A schema-only view: documents one route of gateway.api.urls, serves nothing."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]


def _scope(scope: str) -> str:
    return f"Needs the `{scope}` scope (or `admin`)."


class ChatCompletionsDescription(_Described):
    @extend_schema(
        operation_id="createChatCompletion",
        tags=["chat"],
        summary="Create a chat completion (OpenAI-compatible; JSON or SSE)",
        description=_scope(ApiKey.Scope.CHAT.value),
        request=ChatCompletionRequestSerializer,
        parameters=[_GPC, _CACHE_CONTROL],
        examples=[
            OpenApiExample(
                "Say hello",
                request_only=True,
                value={"model": "default", "messages": [{"role": "user", "content": "Say hello"}]},
            )
        ],
        responses={
            (200, JSON): OpenApiResponse(ChatCompletionSerializerOut, "The answer."),
            (200, SSE): _SSE_OPENAI,
            **_CHAT_ERRORS,
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


class ResponsesDescription(_Described):
    @extend_schema(
        operation_id="createResponse",
        tags=["chat"],
        summary="Create a model response (OpenAI's Responses API, stateless; JSON or SSE)",
        description=_scope(ApiKey.Scope.CHAT.value)
        + " Runs through the same pipeline as chat completions.",
        request=ResponsesRequestSerializer,
        parameters=[_GPC, _CACHE_CONTROL],
        examples=[
            OpenApiExample(
                "Say hello", request_only=True, value={"model": "default", "input": "Say hello"}
            )
        ],
        responses={
            (200, JSON): OpenApiResponse(ResponseObjectSerializer, "The response."),
            (200, SSE): _SSE_RESPONSES,
            **_CHAT_ERRORS,
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


class CompletionsDescription(_Described):
    @extend_schema(
        operation_id="createCompletion",
        tags=["chat"],
        summary="Create a legacy text completion (the prompt as one user message)",
        description=_scope(ApiKey.Scope.CHAT.value),
        request=CompletionsRequestSerializer,
        parameters=[_GPC, _CACHE_CONTROL],
        examples=[
            OpenApiExample(
                "Say hello", request_only=True, value={"model": "default", "prompt": "Say hello"}
            )
        ],
        responses={
            (200, JSON): OpenApiResponse(CompletionSerializer, "The completion."),
            (200, SSE): _SSE_COMPLETIONS,
            **_CHAT_ERRORS,
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


class EmbeddingsDescription(_Described):
    @extend_schema(
        operation_id="createEmbedding",
        tags=["embeddings"],
        summary="Create embeddings (OpenAI-compatible)",
        description=_scope(ApiKey.Scope.EMBEDDINGS.value),
        request=EmbeddingsRequestSerializer,
        parameters=[_CACHE_CONTROL],
        responses={
            200: OpenApiResponse(EmbeddingsResponseSerializer, "The vectors."),
            **_CHAT_ERRORS,
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


class ModelsDescription(_Described):
    @extend_schema(
        operation_id="listModels",
        tags=["models"],
        summary="The aliases this key may use",
        description=_scope(ApiKey.Scope.MODELS_READ.value),
        responses={
            200: OpenApiResponse(ModelListSerializer, "The aliases, by name."),
            **_AUTH_ERRORS,
            503: _UNAVAILABLE,
        },
    )
    def get(self, request):  # pragma: no cover
        raise NotImplementedError


class CacheInvalidateDescription(_Described):
    @extend_schema(
        operation_id="invalidateCache",
        tags=["cache"],
        summary="Stop serving the tenant's cached answers (one alias or all)",
        description="Needs the `admin` scope. The body may be empty.",
        request=CacheInvalidationRequestSerializer,
        responses={
            200: OpenApiResponse(CacheInvalidationSerializer, "Invalidated."),
            400: _error(_BODY_ERRORS),
            **_AUTH_ERRORS,
            413: _TOO_LARGE,
            503: _UNAVAILABLE,
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


class ConsentDescription(_Described):
    @extend_schema(
        operation_id="getConsent",
        tags=["privacy"],
        summary="An end user's consent state",
        description=_scope(ApiKey.Scope.PRIVACY.value),
        parameters=[_USER],
        responses={
            200: OpenApiResponse(ConsentStateSerializer, "The consent state."),
            400: _error("`invalid_value` (an invalid user id)"),
            **_PRIVACY_ERRORS,
        },
    )
    def get(self, request, user):  # pragma: no cover
        raise NotImplementedError

    @extend_schema(
        operation_id="setConsent",
        tags=["privacy"],
        summary="Record consent decisions (grant or withdraw)",
        description=_scope(ApiKey.Scope.PRIVACY.value) + " One purpose (`purpose`, "
        "`granted`) or several (`consents`), not both. With `Sec-GPC: 1` the sale/sharing "
        "opt-out is recorded and a grant of `sale_sharing` is refused.",
        parameters=[_USER, _GPC],
        request=_CONSENT_REQUEST,
        responses={
            200: OpenApiResponse(ConsentStateSerializer, "The consent state after it."),
            **_PRIVACY_BODY_ERRORS,
        },
    )
    def post(self, request, user):  # pragma: no cover
        raise NotImplementedError


class SubjectRegisterDescription(_Described):
    @extend_schema(
        operation_id="registerSubject",
        tags=["privacy"],
        summary="Register an end user's contact email",
        description=_scope(ApiKey.Scope.PRIVACY.value),
        parameters=[_USER],
        request=SubjectRegisterRequestSerializer,
        responses={
            200: OpenApiResponse(SubjectRegisteredSerializer, "Registered."),
            **_PRIVACY_BODY_ERRORS,
        },
    )
    def put(self, request, user):  # pragma: no cover
        raise NotImplementedError


class SubjectRequestCreateDescription(_Described):
    @extend_schema(
        operation_id="createSubjectRequest",
        tags=["privacy"],
        summary="Open a data-subject request (access, erasure, opt-out) for an end user",
        description=_scope(ApiKey.Scope.PRIVACY.value) + " It waits for an officer's approval.",
        parameters=[_USER],
        request=SubjectRequestCreateSerializer,
        responses={
            202: OpenApiResponse(SubjectRequestSerializer, "Received."),
            **_PRIVACY_BODY_ERRORS,
        },
    )
    def post(self, request, user):  # pragma: no cover
        raise NotImplementedError


class SubjectRequestStatusDescription(_Described):
    @extend_schema(
        operation_id="getSubjectRequest",
        tags=["privacy"],
        summary="State and deadlines of one of the tenant's data-subject requests",
        description=_scope(ApiKey.Scope.PRIVACY.value),
        parameters=[
            OpenApiParameter(
                "public_id",
                str,
                OpenApiParameter.PATH,
                description="The id returned when it was created.",
            )
        ],
        responses={
            200: OpenApiResponse(SubjectRequestSerializer, "The request."),
            **_PRIVACY_ERRORS,
            404: _error("`not_found` (missing, or another tenant's: alike)"),
        },
    )
    def get(self, request, public_id):  # pragma: no cover
        raise NotImplementedError


class SimpleChatDescription(_Described):
    @extend_schema(
        operation_id="createSimpleChat",
        tags=["chat"],
        summary="A simple chat shape over the same pipeline",
        description=_scope(ApiKey.Scope.CHAT.value),
        request=SimpleChatRequestSerializer,
        parameters=[_GPC, _CACHE_CONTROL],
        examples=[OpenApiExample("Say hello", request_only=True, value={"prompt": "Say hello"})],
        responses={
            200: OpenApiResponse(SimpleChatResponseSerializer, "The answer."),
            **_CHAT_ERRORS,
        },
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


class SimpleChatStreamDescription(_Described):
    @extend_schema(
        operation_id="createSimpleChatStream",
        tags=["chat"],
        summary="A simple streaming chat shape over the same pipeline",
        description=_scope(ApiKey.Scope.CHAT.value),
        request=SimpleChatRequestSerializer,
        parameters=[_GPC, _CACHE_CONTROL],
        responses={(200, SSE): _SSE_SIMPLE, **_CHAT_ERRORS},
    )
    def post(self, request):  # pragma: no cover
        raise NotImplementedError


# Route name in gateway.api.urls -> its description.
DESCRIPTIONS: dict[str, type[APIView]] = {
    "chat-completions": ChatCompletionsDescription,
    "responses": ResponsesDescription,
    "completions": CompletionsDescription,
    "embeddings": EmbeddingsDescription,
    "models": ModelsDescription,
    "cache-invalidate": CacheInvalidateDescription,
    "privacy-consent": ConsentDescription,
    "privacy-subject-requests": SubjectRequestCreateDescription,
    "privacy-subject": SubjectRegisterDescription,
    "privacy-request": SubjectRequestStatusDescription,
    "simple-chat": SimpleChatDescription,
    "simple-chat-stream": SimpleChatStreamDescription,
}

# Request bodies the views check for unknown fields: documented as closed objects.
CLOSED_OBJECTS = (
    "ChatCompletionRequest",
    "ResponsesRequest",
    "CompletionsRequest",
    "EmbeddingsRequest",
    "SimpleChatRequest",
    "ConsentDecisionRequest",
    "ConsentDecisionsRequest",
    "ConsentFlags",
    "SubjectRegisterRequest",
    "SubjectRequestCreate",
)


def described_patterns() -> list[URLPattern]:
    """The served API routes, each pointing at its schema-only view."""
    from gateway.api import messages_schema, urls  # they build on this module

    descriptions: dict[str, type[APIView]] = {**DESCRIPTIONS, **messages_schema.DESCRIPTIONS}
    patterns = []
    for pattern in urls.urlpatterns:
        view = descriptions.get(pattern.name) if pattern.name is not None else None
        if view is None:
            raise ImproperlyConfigured(
                f"API route {pattern.pattern} ({pattern.name}) has no description in "
                "gateway.api.schema.DESCRIPTIONS"
            )
        patterns.append(URLPattern(pattern.pattern, view.as_view(), name=pattern.name))
    return patterns


class ApiSchemaGenerator(SchemaGenerator):
    """drf-spectacular's generator over the described API routes (for the view, the
    ``spectacular`` command and the deploy check alike)."""

    def __init__(self, *args, patterns=None, urlconf=None, **kwargs):
        if patterns is None and urlconf is None:
            patterns = described_patterns()
        super().__init__(*args, patterns=patterns, urlconf=urlconf, **kwargs)


def close_request_objects(result, generator, request, public):
    """Postprocessing hook: bodies whose unknown fields the API refuses get
    ``additionalProperties: false``; ``consents`` names at least one purpose; ``messages``
    gets the validating serializer's length bounds (drf-spectacular leaves them out)."""
    schemas = result.get("components", {}).get("schemas", {})
    messages_field = ChatCompletionSerializer._declared_fields["messages"]
    messages = schemas.get("ChatCompletionRequest", {}).get("properties", {}).get("messages")
    if messages is not None:
        if not messages_field.allow_empty:
            messages["minItems"] = 1
        if messages_field.max_length is not None:
            messages["maxItems"] = messages_field.max_length
    for name in CLOSED_OBJECTS:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    if "ConsentFlags" in schemas:
        schemas["ConsentFlags"]["minProperties"] = 1
    return result
