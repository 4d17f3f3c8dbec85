from __future__ import annotations

from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "privacy"

    def ready(self) -> None:
        from llmplatform import datamap
        from privacy import holders

        datamap.register(
            datamap.DataHolder(
                name="privacy.conversations",
                description="Stored conversation records (redacted, encrypted with the subject's "
                "data key)",
                find=holders.find_conversations,
                erase=holders.erase_conversations,
            )
        )
        datamap.register(
            datamap.DataHolder(
                name="privacy.subject",
                description="The subject: contact email (encrypted), opt-out, consent history, "
                "data key",
                find=holders.find_subject,
                erase=holders.erase_subject,
            )
        )
