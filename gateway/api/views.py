from __future__ import annotations


async def _todo(request):
    raise NotImplementedError


chat_completions = list_models = simple_chat = simple_chat_stream = _todo
