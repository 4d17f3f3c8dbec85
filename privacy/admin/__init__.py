"""The privacy app's admin, found by Django's admin autodiscovery (``privacy.admin``):
importing this package registers its ModelAdmins: policies, subjects, consent history,
conversation records and purge runs (``records``), and data-subject requests with their
erasure receipts (``subject_requests``)."""

from __future__ import annotations

# isort: off
from privacy.admin import records
from privacy.admin import subject_requests

# isort: on

__all__ = ["records", "subject_requests"]
