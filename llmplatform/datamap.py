"""The data map: every place that holds personal data of a data subject registers here how to
find and erase it, so an erasure or access request walks one list and a new data holder cannot
be forgotten (like Fides' dataset graph). Apps register their holders in ``AppConfig.ready``;
the privacy app walks the map. Imports keep pointing down: the kernel knows no app.

A subject is named by ``(tenant_id, external_id)``, the tenant and the apps' ``user`` value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DataHolder:
    name: str  # e.g. "gateway.response_cache"
    description: str
    # Returns a JSON-serialisable summary (or the data itself) held about the subject.
    find: Callable[[int, str], Any]
    # Erases what is held; returns how many items were erased. Must be idempotent.
    erase: Callable[[int, str], int]


_holders: dict[str, DataHolder] = {}


def register(holder: DataHolder) -> None:
    _holders[holder.name] = holder


def holders() -> list[DataHolder]:
    return [_holders[name] for name in sorted(_holders)]


def find_all(tenant_id: int, external_id: str) -> dict[str, Any]:
    return {h.name: h.find(tenant_id, external_id) for h in holders()}


def erase_all(tenant_id: int, external_id: str) -> dict[str, int]:
    return {h.name: h.erase(tenant_id, external_id) for h in holders()}
