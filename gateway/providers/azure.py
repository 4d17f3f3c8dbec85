"""Azure OpenAI: OpenAI's wire format, addressed per deployment and authenticated with an
``api-key`` header. ``ChatRequest.model`` is the deployment name."""

from __future__ import annotations

from urllib.parse import quote

from gateway.providers.base import ChatRequest, EmbeddingRequest, UpstreamBadResponse
from gateway.providers.openai_compatible import OpenAICompatibleAdapter


class AzureOpenAIAdapter(OpenAICompatibleAdapter):
    def _api_version_query(self) -> str:
        if not self.config.api_version:
            # Azure answers 404 without one; say what is actually wrong.
            raise UpstreamBadResponse(f"{self._label} has no api_version configured")
        return f"api-version={quote(self.config.api_version, safe='')}"

    def chat_url(self, request: ChatRequest) -> str:
        deployment = quote(request.model, safe="")
        return (
            f"{self.base_url}/openai/deployments/{deployment}/chat/completions"
            f"?{self._api_version_query()}"
        )

    def embeddings_url(self, request: EmbeddingRequest) -> str:
        deployment = quote(request.model, safe="")
        return (
            f"{self.base_url}/openai/deployments/{deployment}/embeddings"
            f"?{self._api_version_query()}"
        )

    def models_url(self) -> str:
        return f"{self.base_url}/openai/models?{self._api_version_query()}"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key} if key else {}
