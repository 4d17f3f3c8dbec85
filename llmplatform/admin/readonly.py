"""The base of the admin of a log: read here, never written here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

if TYPE_CHECKING:
    # Generic only in django-stubs; at runtime it takes no type arguments. A base for the admin
    # of any model (Any: each subclass narrows its model).
    _AnyModelAdmin = admin.ModelAdmin[Any]
else:
    _AnyModelAdmin = admin.ModelAdmin


class ReadOnlyAdmin(_AnyModelAdmin):
    """A log officers read but nobody adds to, changes or deletes from here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False
