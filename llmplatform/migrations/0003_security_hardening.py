from django.db import migrations, models


def restore_sqlite_trigger(apps, schema_editor):
    """SQLite adds a column by rebuilding the table, which drops its triggers: put the
    append-only one back (0002 made it)."""
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS llmp_audit_no_update;")
        schema_editor.execute(
            """CREATE TRIGGER llmp_audit_no_update BEFORE UPDATE ON llmplatform_auditevent
               BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"""
        )


class Migration(migrations.Migration):
    dependencies = [
        ("llmplatform", "0002_audit_append_only_triggers"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="client_request_id",
            field=models.CharField(blank=True, max_length=128),
        ),
        migrations.RunPython(restore_sqlite_trigger, migrations.RunPython.noop),
        migrations.AddField(
            model_name="tenant",
            name="require_owner_2fa",
            field=models.BooleanField(
                default=False,
                help_text="Owners reach the tenant's portal pages only in a session confirmed "
                "with an authenticator code (TOTP); members may set one up.",
                verbose_name="owners must use an authenticator",
            ),
        ),
    ]
