"""The gateway's admin, found by Django's admin autodiscovery (``gateway.admin``). Importing
this package registers its ModelAdmins, in the order below (the order of the one admin.py this
package replaced)."""

from __future__ import annotations

# isort: off
from gateway.admin import tenants
from gateway.admin import keys
from gateway.admin import providers
from gateway.admin import usage
from gateway.admin import security
from gateway.admin import scanners

# Last: it extends ModelAliasAdmin (providers) with the fallback inline.
from gateway.admin import resilience

# isort: on

__all__ = ["keys", "providers", "resilience", "scanners", "security", "tenants", "usage"]
