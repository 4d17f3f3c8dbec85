"""One adapter per provider per process, so HTTP connection pools and boto3 clients are built
once and reused across requests.

An adapter is rebuilt when its provider row changes (``ProviderConfig.revision``). The replaced
one may still be serving requests (a long stream, say), so it is closed after a grace period
rather than at once; if the process or event loop ends first, its sockets close with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from gateway.providers.base import ProviderAdapter, ProviderConfig

# Long enough for requests already under way on a replaced adapter to finish.
RETIRE_AFTER_SECONDS = 600.0

_lock = threading.Lock()
# provider name -> (revision, adapter)
_adapters: dict[str, tuple[str, ProviderAdapter]] = {}
_retiring: dict[int, tuple[ProviderAdapter, asyncio.TimerHandle]] = {}
_closing: set[asyncio.Task[None]] = set()  # strong references, so the tasks are not collected


def build_adapter(config: ProviderConfig) -> ProviderAdapter:
    # Imported here: a process only pays for the SDKs of the kinds it actually uses.
    if config.kind == "openai":
        from gateway.providers.openai_compatible import OpenAICompatibleAdapter

        return OpenAICompatibleAdapter(config)
    if config.kind == "azure":
        from gateway.providers.azure import AzureOpenAIAdapter

        return AzureOpenAIAdapter(config)
    if config.kind == "bedrock":
        from gateway.providers.bedrock import BedrockAdapter

        return BedrockAdapter(config)
    if config.kind == "anthropic":
        from gateway.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter(config)
    if config.kind == "gemini":
        from gateway.providers.google import GeminiAdapter

        return GeminiAdapter(config)
    if config.kind == "vertex":
        from gateway.providers.google import VertexAdapter

        return VertexAdapter(config)
    raise ValueError(f"unknown provider kind {config.kind!r} (provider {config.name!r})")


def get_adapter(config: ProviderConfig) -> ProviderAdapter:
    """The cached adapter for this provider revision; building it does no I/O."""
    with _lock:
        entry = _adapters.get(config.name)
        if entry is not None and entry[0] == config.revision:
            return entry[1]
        adapter = build_adapter(config)
        _adapters[config.name] = (config.revision, adapter)
    if entry is not None:
        _retire(entry[1])
    return adapter


def _retire(adapter: ProviderAdapter) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # called outside the event loop: nothing to schedule a close on

    def close() -> None:
        _retiring.pop(id(adapter), None)
        _close_soon(adapter)

    handle = loop.call_later(RETIRE_AFTER_SECONDS, close)
    _retiring[id(adapter)] = (adapter, handle)


def _close_soon(adapter: ProviderAdapter) -> None:
    task = asyncio.get_running_loop().create_task(_close_quietly(adapter))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close_quietly(adapter: ProviderAdapter) -> None:
    # Best effort: a failure to close must not break whoever triggered it.
    with contextlib.suppress(Exception):
        await adapter.aclose()


async def close_all() -> None:
    """Close every adapter, current or retiring, and forget them (shutdown, tests)."""
    with _lock:
        adapters = [adapter for _, adapter in _adapters.values()]
        _adapters.clear()
        for adapter, handle in _retiring.values():
            handle.cancel()
            adapters.append(adapter)
        _retiring.clear()
    for adapter in adapters:
        await _close_quietly(adapter)
