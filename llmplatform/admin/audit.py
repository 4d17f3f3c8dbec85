"""Audited admin: every save and delete made in the admin writes an audit row, in the same
transaction as the change (the admin's change views run inside ``transaction.atomic``), as
``admin.<model>.<add|change|delete>``: each of those is an ``AuditAction``, which Django's
system checks make sure of for every audited admin and its inlines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from django.contrib import admin
from django.core import checks
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.forms import BaseModelForm, ModelForm
from django.forms.models import BaseInlineFormSet, model_to_dict
from django.http import HttpRequest

from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record

_encoder = DjangoJSONEncoder()
VERBS = ("add", "change", "delete")

if TYPE_CHECKING:
    # Generic only in django-stubs (at runtime they take no type arguments): a base for the
    # admin of any model (Any: each subclass narrows its model), and an inline's formset.
    _ModelAdmin = admin.ModelAdmin[Any]
    _InlineFormSet = BaseInlineFormSet[models.Model, models.Model, ModelForm[models.Model]]
else:
    _ModelAdmin = admin.ModelAdmin


class _WithObjects(Protocol):
    """A model class whose manager is ``objects``, as every model admin'd here has one."""

    objects: ClassVar[models.Manager[models.Model]]


class _AuditedRequest(Protocol):
    """A request after ``save_model``: the object's snapshot before the change."""

    _llmp_audit_before: dict[str, Any] | None


def snapshot(obj: models.Model, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    data = model_to_dict(obj, exclude=list(exclude))
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = [getattr(v, "pk", v) for v in value]
        elif isinstance(value, models.Model):
            value = value.pk
        try:
            out[key] = (
                _encoder.default(value)
                if not isinstance(value, str | int | float | bool | list | dict | type(None))
                else value
            )
        except TypeError:
            out[key] = str(value)
    return out


def admin_action(model: type[models.Model], verb: str) -> AuditAction:
    """``admin.<model>.<verb>`` (``AuditedModelAdmin.check`` makes sure each exists)."""
    return AuditAction(f"admin.{model._meta.model_name}.{verb}")


class AuditedModelAdmin(_ModelAdmin):
    #: fields never copied into the audit log (hashes, secrets)
    audit_exclude: tuple[str, ...] = ()

    def _action(self, verb: str) -> AuditAction:
        return admin_action(self.model, verb)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        audited = [self.model, *(inline.model for inline in self.inlines)]
        missing = [
            f"admin.{model._meta.model_name}.{verb}"
            for model in audited
            for verb in VERBS
            if f"admin.{model._meta.model_name}.{verb}" not in AuditAction.values
        ]
        if missing:
            errors.append(
                checks.Error(
                    f"{type(self).__name__} audits actions that AuditAction does not name: "
                    f"{', '.join(missing)}",
                    hint="Add them to llmplatform/audit_actions.py.",
                    obj=type(self),
                    id="llmplatform.E003",
                )
            )
        return errors

    def save_model(
        self,
        request: HttpRequest,
        obj: models.Model,
        form: BaseModelForm[models.Model],
        change: bool,
    ) -> None:
        before = None
        if change and obj.pk:
            model = cast("type[_WithObjects]", type(obj))  # each model admin'd here has objects
            old = model.objects.filter(pk=obj.pk).first()
            before = snapshot(old, self.audit_exclude) if old else None
        super().save_model(request, obj, form, change)
        # cast: the attribute is set here, for save_related.
        cast(_AuditedRequest, request)._llmp_audit_before = before

    def save_related(
        self,
        request: HttpRequest,
        form: BaseModelForm[models.Model],
        formsets: list[_InlineFormSet],
        change: bool,
    ) -> None:
        super().save_related(request, form, formsets, change)
        before: dict[str, Any] | None = getattr(request, "_llmp_audit_before", None)
        obj = form.instance
        after = snapshot(obj, self.audit_exclude)
        if before != after or not change:
            audit_record(
                actor=Actor.for_user(request.user),
                action=self._action("change" if change else "add"),
                obj=obj,
                before=before,
                after=after,
            )

    def save_formset(
        self,
        request: HttpRequest,
        form: BaseModelForm[models.Model],
        formset: _InlineFormSet,
        change: bool,
    ) -> None:
        befores = {
            f.instance.pk: snapshot(
                cast("type[_WithObjects]", type(f.instance)).objects.get(pk=f.instance.pk)
            )  # cast: each model admin'd here has objects
            for f in formset.forms
            if f.instance.pk and f.has_changed()
        }
        for f in formset.deleted_forms:
            if f.instance.pk:
                audit_record(
                    actor=Actor.for_user(request.user),
                    action=self._inline_action(f.instance, "delete"),
                    obj=f.instance,
                    before=snapshot(f.instance),
                )
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            audit_record(
                actor=Actor.for_user(request.user),
                action=self._inline_action(obj, "add"),
                obj=obj,
                after=snapshot(obj),
            )
        for obj, _fields in formset.changed_objects:
            audit_record(
                actor=Actor.for_user(request.user),
                action=self._inline_action(obj, "change"),
                obj=obj,
                before=befores.get(obj.pk),
                after=snapshot(obj),
            )

    @staticmethod
    def _inline_action(obj: models.Model, verb: str) -> AuditAction:
        return admin_action(type(obj), verb)

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        before = snapshot(obj, self.audit_exclude)
        audit_record(
            actor=Actor.for_user(request.user),
            action=self._action("delete"),
            obj=obj,
            before=before,
        )
        super().delete_model(request, obj)

    def delete_queryset(
        self, request: HttpRequest, queryset: models.QuerySet[models.Model]
    ) -> None:
        # The "delete selected" action runs outside the change views' transaction.
        with transaction.atomic():
            for obj in queryset:
                audit_record(
                    actor=Actor.for_user(request.user),
                    action=self._action("delete"),
                    obj=obj,
                    before=snapshot(obj, self.audit_exclude),
                )
            super().delete_queryset(request, queryset)
