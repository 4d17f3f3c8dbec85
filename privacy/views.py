"""The public data-subject request pages: make a request, prove the email with a one-time
code, follow its state, download an export once.

The pages never say whether an email is registered: every submission gets a request and the
same "if this email is registered, we sent a code" page (an unknown email's request simply
cannot be verified). Submissions and code checks are rate limited per client IP.
"""

from __future__ import annotations

import json

import structlog
from django import forms
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import is_ratelimited

from llmplatform.actors import Actor
from llmplatform.models import Tenant
from llmplatform.request_context import client_network
from privacy.models import SubjectRequest
from privacy.subject_requests import deadlines, export
from privacy.subject_requests import selectors as request_selectors
from privacy.subject_requests import services as request_services

RATE_GROUP = "privacy.request"
PUBLIC_ACTOR = Actor.anonymous("public_page")
log = structlog.get_logger("privacy.requests")


class RequestForm(forms.Form):
    tenant = forms.SlugField(
        label="Organisation",
        max_length=64,
        help_text="The organisation's identifier (as in its privacy notice)",
    )
    kind = forms.ChoiceField(label="Request", choices=SubjectRequest.Kind.choices)
    law = forms.ChoiceField(label="Law", choices=SubjectRequest.Law.choices)
    email = forms.EmailField(
        label="Your email",
        max_length=254,
        help_text="The address you registered with the organisation",
    )

    def clean_tenant(self) -> Tenant | None:
        # None for an organisation that does not exist: the page goes on exactly as for one
        # that does (see request_start), so it does not tell who the platform's tenants are.
        return Tenant.objects.filter(slug=self.cleaned_data["tenant"], is_active=True).first()


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=12,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


def _client_key(group: str, request: HttpRequest) -> str:
    # An IPv6 caller counts as its /64 (one host holds all of it).
    return client_network(request.META)


def _rate_limited(request: HttpRequest) -> bool:
    # Counted in the default cache (Redis when configured). Fails closed: the page is a public
    # write endpoint that sends email, and refusing it for a while harms nobody's rights.
    try:
        return is_ratelimited(
            request,
            group=RATE_GROUP,
            key=_client_key,
            rate=settings.LLMP_PRIVACY_REQUEST_RATE,
            increment=True,
        )
    except Exception:
        log.warning("privacy_rate_limit_unavailable", exc_info=True)
        return True


def _too_many(request: HttpRequest) -> HttpResponse:
    return render(request, "privacy/rate_limited.html", status=429)


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "privacy/not_found.html", status=404)


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def request_start(request: HttpRequest) -> HttpResponse:
    form = RequestForm(request.POST or None)
    if request.method == "POST":
        if _rate_limited(request):
            return _too_many(request)
        if form.is_valid():
            data = form.cleaned_data
            if data["tenant"] is None:
                return HttpResponseRedirect(
                    reverse("privacy:request-verify", args=[request_selectors.decoy_public_id()])
                )
            subject_request = request_services.subject_request_create(
                tenant=data["tenant"],
                kind=data["kind"],
                law=data["law"],
                source=SubjectRequest.Source.PUBLIC_PAGE,
                email=data["email"],
                # Not the client's address: the audit log is kept after an erasure.
                actor=PUBLIC_ACTOR,
            )
            return HttpResponseRedirect(
                reverse(
                    "privacy:request-verify", args=[request_selectors.public_id(subject_request)]
                )
            )
    return render(request, "privacy/request_form.html", {"form": form})


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def request_verify(request: HttpRequest, public_id: str) -> HttpResponse:
    subject_request = request_selectors.request_for_public_id(public_id)
    if subject_request is None:
        if request_selectors.is_decoy_public_id(public_id):
            return _decoy_verify(request)
        return _not_found(request)
    status_url = reverse("privacy:request-status", args=[public_id])
    if subject_request.state != SubjectRequest.State.RECEIVED:
        return HttpResponseRedirect(status_url)
    form = CodeForm(request.POST or None)
    if request.method == "POST":
        if _rate_limited(request):
            return _too_many(request)
        if form.is_valid():
            result = request_services.subject_request_verify(
                request=subject_request, code=form.cleaned_data["code"]
            )
            if result is request_services.VerifyResult.WRONG:
                form.add_error("code", "That code is wrong or has expired.")
            else:
                return HttpResponseRedirect(status_url)
    return render(
        request,
        "privacy/verify.html",
        {
            "form": form,
            "subject_request": subject_request,
            "minutes": int(request_services.CODE_LIFETIME.total_seconds() // 60),
        },
    )


def _decoy_verify(request: HttpRequest) -> HttpResponse:
    """The code page of a request to an organisation that does not exist: the same page, and
    every code is wrong, as for an address that is not registered."""
    form = CodeForm(request.POST or None)
    if request.method == "POST":
        if _rate_limited(request):
            return _too_many(request)
        if form.is_valid():
            form.add_error("code", "That code is wrong or has expired.")
    return render(
        request,
        "privacy/verify.html",
        {"form": form, "minutes": int(request_services.CODE_LIFETIME.total_seconds() // 60)},
    )


@never_cache
@require_http_methods(["GET"])
def request_status(request: HttpRequest, public_id: str) -> HttpResponse:
    subject_request = request_selectors.request_for_public_id(public_id)
    if subject_request is None:
        return _not_found(request)
    return render(
        request,
        "privacy/status.html",
        {
            "subject_request": subject_request,
            "public_id": public_id,
            "due": deadlines.effective_due(subject_request),
        },
    )


EXPORT_FORMATS = {"zip", "json", "csv"}


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def export_download(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows the download buttons; only a POST uses the link up, so a mail scanner or
    browser prefetch that opens the link does not spend the one download."""
    try:
        if request.method == "GET":
            subject_request = export.export_link_check(token)
            return render(request, "privacy/export.html", {"subject_request": subject_request})
        fmt = request.GET.get("format") or request.POST.get("format") or "zip"
        if fmt not in EXPORT_FORMATS:
            fmt = "zip"
        subject_request, document = export.subject_request_export_download(token=token)
    except export.ExportUnavailable as exc:
        return render(request, "privacy/export_gone.html", {"reason": exc.reason}, status=410)
    name = f"{subject_request.tenant.slug}-data-export"
    if fmt == "json":
        response = HttpResponse(
            json.dumps(document, indent=2, default=str), content_type="application/json"
        )
        filename = f"{name}.json"
    elif fmt == "csv":
        response = HttpResponse(export.export_csv(document), content_type="text/csv")
        filename = f"{name}.csv"
    else:
        response = HttpResponse(export.export_zip(document), content_type="application/zip")
        filename = f"{name}.zip"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
