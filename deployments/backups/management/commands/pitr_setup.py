"""Set up point-in-time recovery with pgBackRest (LLMP_PITR_*): write pgbackrest.conf (no
secret in it), print the postgresql.conf lines and the environment the PostgreSQL server needs
for its archive_command, and with --create-stanza create the stanza in the repository (after
the server has been restarted with those settings).

    manage.py pitr_setup                   # write the config, print what the server needs
    manage.py pitr_setup --create-stanza   # then: stanza-create, and a first full backup
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from deployments.backups import conf, pitr
from llmplatform.actors import Actor


class Command(BaseCommand):
    help = "Write pgBackRest's configuration; print the server's settings; create the stanza."
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--create-stanza",
            action="store_true",
            help="create the stanza in the repository and take a first full backup",
        )

    def handle(self, *args, **options):
        settings = conf.pitr_get()
        try:
            path = pitr.write_config(settings)
            self.stdout.write(f"wrote {path}")
            self.stdout.write("postgresql.conf (then restart the server):")
            for name, value in pitr.server_settings(settings).items():
                self.stdout.write(f"    {name} = '{value}'")
            names = sorted(pitr.secret_env())
            self.stdout.write(
                "the server's environment (its archive_command reads them; e.g. a systemd "
                "EnvironmentFile readable by postgres only): " + ", ".join(names)
            )
            if options["create_stanza"]:
                pitr.stanza_create(settings)
                result = pitr.pitr_backup_run(actor=Actor.system("command:pitr_setup"), kind="full")
                label = result.backup.label if result.backup else "?"
                self.stdout.write(
                    f"stanza {settings.stanza} created; full backup {label} in "
                    f"{result.duration_seconds:.1f} s"
                )
        except pitr.PitrError as exc:
            raise CommandError(str(exc)) from None
