"""One adapter per scanner revision (a saved row is a new revision), built without I/O. A
replaced adapter is closed a little later, as the providers' are (requests still using it
finish first)."""

from __future__ import annotations

import threading
from typing import Any, cast

from gateway.providers.registry import _retire
from gateway.scanners.base import ScannerAdapter, ScannerConfig

_lock = threading.Lock()
_adapters: dict[str, tuple[str, ScannerAdapter]] = {}  # name -> (revision, adapter)


def build_scanner(config: ScannerConfig) -> ScannerAdapter:
    # Imported here: a process only pays for the SDKs of the kinds it uses.
    if config.kind == "http":
        from gateway.scanners.http import HttpScanner

        return HttpScanner(config)
    if config.kind == "presidio":
        from gateway.scanners.presidio import PresidioScanner

        return PresidioScanner(config)
    if config.kind == "bedrock":
        from gateway.scanners.bedrock import BedrockGuardrailScanner

        return BedrockGuardrailScanner(config)
    raise ValueError(f"unknown scanner kind {config.kind!r}")


def get_scanner(config: ScannerConfig) -> ScannerAdapter:
    with _lock:
        entry = _adapters.get(config.name)
        if entry is not None and entry[0] == config.revision:
            return entry[1]
        adapter = build_scanner(config)
        _adapters[config.name] = (config.revision, adapter)
    if entry is not None:
        # Closing needs only ``aclose``, which scanner adapters have as providers' do.
        _retire(cast(Any, entry[1]))
    return adapter
