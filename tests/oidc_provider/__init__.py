"""A real OpenID Connect provider for the portal's sign-in tests: a minimal Django project with
django-oauth-toolkit in OIDC mode, run as its own process (``serve_oidc_provider``)."""
