"""The admin app, with the governance admin site as ``admin.site``.

Listed in INSTALLED_APPS instead of ``django.contrib.admin`` (Django's documented way to replace
the default site), so every ``admin.register``/``admin.site.register`` in the apps lands on the
site that asks for a second factor. Kept apart from ``llmplatform.admin`` (whose import
registers ModelAdmins) because an AppConfig module is imported before models can be.
"""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class GovernanceAdminConfig(AdminConfig):
    default_site = "llmplatform.adminsite.site.GovernanceAdminSite"

    def ready(self) -> None:
        super().ready()
        from llmplatform import staff_signin

        staff_signin.connect_audit_receivers()
