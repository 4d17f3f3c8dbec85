"""The admin site itself: its app config (``apps``, listed in INSTALLED_APPS), the site that asks
staff for a second factor (``site``, the config's ``default_site``) and the dashboard's panel
registry (``dashboard``). Nothing here registers a ModelAdmin (that is ``llmplatform.admin``):
these modules are imported before any ModelAdmin may be, the config before models can be and
the site when ``admin.site`` is first used."""
