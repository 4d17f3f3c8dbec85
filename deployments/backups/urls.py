from __future__ import annotations

app_name = "backups"
urlpatterns: list = []
