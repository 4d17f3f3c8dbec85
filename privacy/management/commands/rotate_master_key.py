"""Re-wrap every subject data key with the current master key (LLMP_MASTER_KEY, or the KMS key
LLMP_KMS_KEY_ID). Put the old local master key in LLMP_MASTER_KEYS_PREVIOUS while this runs;
remove it afterwards. Records are not re-encrypted. Safe to re-run."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from llmplatform.actors import Actor
from privacy.crypto import CryptoError, master_key_rotate


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, **options):
        try:
            result = master_key_rotate(
                actor=Actor.system("command:rotate_master_key"), batch_size=options["batch_size"]
            )
        except CryptoError as exc:
            raise CommandError(f"rotation stopped: {exc}") from None
        self.stdout.write(
            f"re-wrapped {result.rewrapped} data keys in {result.batches} "
            f"batches with {result.master_key_id}"
        )
