from __future__ import annotations

from django.urls import path

from gateway.api import completions, messages, responses, views

urlpatterns = [
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
    path("v1/messages", messages.messages, name="messages"),
    path("v1/messages/count_tokens", messages.count_tokens, name="messages-count-tokens"),
    path("v1/responses", responses.create_response, name="responses"),
    path("v1/completions", completions.create_completion, name="completions"),
    path("v1/embeddings", views.embeddings, name="embeddings"),
    path("v1/models", views.list_models, name="models"),
    path("v1/cache/invalidate", views.invalidate_cache, name="cache-invalidate"),
    path("v1/privacy/subjects/<str:user>/consent", views.subject_consent, name="privacy-consent"),
    path(
        "v1/privacy/subjects/<str:user>/requests",
        views.subject_request_create,
        name="privacy-subject-requests",
    ),
    path("v1/privacy/subjects/<str:user>", views.subject_register, name="privacy-subject"),
    path(
        "v1/privacy/requests/<str:public_id>", views.subject_request_status, name="privacy-request"
    ),
    path("chat", views.simple_chat, name="simple-chat"),
    path("chat-stream", views.simple_chat_stream, name="simple-chat-stream"),
]
