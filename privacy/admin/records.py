"""Privacy admin: policies, subjects, consent history, conversation records and purge runs.

No page shows a conversation's content or a contact email. A conversation's redacted
plaintext is revealed on its own page, by a POST from its detail page, only to staff with the
``privacy.read_conversation_plaintext`` permission, and each reveal is audited."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from llmplatform.actors import Actor
from llmplatform.admin.audit import AuditedModelAdmin
from llmplatform.admin.permissions import requires
from llmplatform.admin.readonly import ReadOnlyAdmin
from privacy import services
from privacy.crypto import CryptoError
from privacy.models import ConsentRecord, Conversation, DataSubject, PrivacyPolicy, PurgeRun


@admin.register(PrivacyPolicy)
class PrivacyPolicyAdmin(AuditedModelAdmin):
    list_display = [
        "tenant",
        "store_conversations",
        "retention_days",
        "policy_version",
        "upstream_pii",
        "updated_at",
    ]
    list_filter = ["store_conversations", "upstream_pii"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__name", "tenant__slug"]
    autocomplete_fields = ["tenant"]


class ConsentInline(admin.TabularInline):
    model = ConsentRecord
    fields = ["created_at", "purpose", "granted", "policy_version", "source", "actor", "request_id"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-id"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DataSubject)
class DataSubjectAdmin(ReadOnlyAdmin):
    """Subjects: the email itself is never shown, only whether one is registered."""

    list_display = [
        "external_id",
        "tenant",
        "email_registered",
        "do_not_sell",
        "created_at",
        "erased_at",
    ]
    list_filter = ["do_not_sell", ("erased_at", admin.EmptyFieldListFilter)]
    list_select_related = ["tenant"]
    search_fields = ["=external_id"]
    fields = ["tenant", "external_id", "email_registered", "do_not_sell", "created_at", "erased_at"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types
    inlines = [ConsentInline]
    show_full_result_count = False

    @admin.display(boolean=True, description="email registered")
    def email_registered(self, obj: DataSubject) -> bool:
        return obj.email_ciphertext is not None

    def get_queryset(self, request):
        # The ciphertext is not needed to say whether it exists.
        return super().get_queryset(request).defer("email_ciphertext", "email_hmac")


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    """The consent history: proof of each decision, never changed."""

    list_display = [
        "created_at",
        "subject",
        "purpose",
        "granted",
        "policy_version",
        "source",
        "actor",
    ]
    list_filter = ["purpose", "granted", "source"]
    list_select_related = ["subject__tenant"]
    search_fields = ["=subject__external_id", "request_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    """Stored conversation records. Lists and the detail page show metadata only."""

    list_display = ["id", "tenant", "subject", "alias", "created_at", "expires_at"]
    list_filter = ["tenant", "alias"]
    list_select_related = ["tenant", "subject__tenant"]
    search_fields = ["=request_id", "=subject__external_id"]
    fields = ["tenant", "subject", "alias", "request_id", "key_id", "created_at", "expires_at"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types
    show_full_result_count = False
    change_form_template = "admin/privacy/conversation/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).defer("prompt_ciphertext", "response_ciphertext")

    def get_urls(self):
        return [
            path(
                "<int:object_id>/plaintext/",
                self.admin_site.admin_view(
                    requires("privacy.view_conversation", services.PLAINTEXT_PERMISSION)(
                        self.reveal_plaintext_view
                    )
                ),
                name="privacy_conversation_plaintext",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_reveal_plaintext": request.user.has_perm(services.PLAINTEXT_PERMISSION),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def reveal_plaintext_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        # POST only: a reveal is a deliberate, audited act, not a link a browser may prefetch.
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            raise PermissionDenied
        conversation = get_object_or_404(
            Conversation.objects.select_related("tenant", "subject__tenant"), pk=object_id
        )
        try:
            plaintext = services.conversation_read_plaintext(
                actor=Actor.for_user(request.user), conversation=conversation
            )
        except CryptoError as exc:
            self.message_user(request, f"Cannot decrypt: {exc}", messages.ERROR)
            return redirect(reverse("admin:privacy_conversation_change", args=[object_id]))
        response = TemplateResponse(
            request,
            "admin/privacy/conversation/plaintext.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": conversation,
                "title": f"Plaintext of {conversation}",
                "plaintext": plaintext,
            },
        )
        response["Cache-Control"] = "no-store"
        return response


@admin.register(PurgeRun)
class PurgeRunAdmin(ReadOnlyAdmin):
    """Runs of the retention purge, newest first."""

    list_display = ["started_at", "finished_at", "deleted", "batches", "failed"]
    date_hierarchy = "started_at"
    show_full_result_count = False

    @admin.display(boolean=True, description="failed")
    def failed(self, obj: PurgeRun) -> bool:
        return bool(obj.error)
