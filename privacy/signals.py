"""Signals privacy sends for apps above it (which privacy must not import).

``subject_erased`` is sent inside the erasure's transaction, once per subject actually erased,
with ``tenant_id``, ``subject_hash`` (the keyed hash of the subject's external id,
``crypto.subject_hmac(external_id, purpose="external_id")``, the same value the retired row
keeps) and ``erased_at``. Receivers that write to the database join that transaction, so their
rows commit or roll back with the erasure. The backups app keeps its erasure ledger with it, so
a restore from an older backup can erase the subject again.
"""

from __future__ import annotations

from django.dispatch import Signal

subject_erased = Signal()
