"""The admin of the kernel's models, found by Django's admin autodiscovery (``llmplatform.admin``),
and the bases the apps' admins build on (``audit``, ``readonly``, ``permissions``).

Importing this package registers its ModelAdmins, in the order below (the order of the one
admin.py this package replaced). The admin site itself, its app config and the dashboard's
registry are in ``llmplatform.adminsite``: they are imported before any ModelAdmin may be
registered (the app config before models can be, the site when ``admin.site`` is first used),
so they cannot live in a package whose import registers.
"""

from __future__ import annotations

# isort: off
from llmplatform.admin import tenants
from llmplatform.admin import audit_log
from llmplatform.admin import staff

# isort: on

__all__ = ["audit_log", "staff", "tenants"]
