from __future__ import annotations

from django.urls import path

from gateway.api import views

urlpatterns = [
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
    path("v1/models", views.list_models, name="models"),
    path("v1/cache/invalidate", views.invalidate_cache, name="cache-invalidate"),
    path("chat", views.simple_chat, name="simple-chat"),
    path("chat-stream", views.simple_chat_stream, name="simple-chat-stream"),
]
