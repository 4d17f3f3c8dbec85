"""Make the audit log append-only in the database itself, so that not even raw SQL (a shell, a
buggy migration, a compromised admin session) can rewrite history.

TRUNCATE is not guarded by a trigger: Django's test flush uses it, and in production it needs
table ownership, which the application's database role should not have. On SQLite (the
single-machine embedded default) only UPDATE is guarded: Django's flush deletes rows there."""

from __future__ import annotations

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION llmp_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER llmp_audit_no_update BEFORE UPDATE OR DELETE ON llmplatform_auditevent
    FOR EACH ROW EXECUTE FUNCTION llmp_audit_append_only();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS llmp_audit_no_update ON llmplatform_auditevent;
DROP FUNCTION IF EXISTS llmp_audit_append_only();
"""
SQLITE_UP = [
    """CREATE TRIGGER llmp_audit_no_update BEFORE UPDATE ON llmplatform_auditevent
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS llmp_audit_no_update;",
]


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP)
    elif vendor == "sqlite":
        for statement in SQLITE_UP:
            schema_editor.execute(statement)


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN)
    elif vendor == "sqlite":
        for statement in SQLITE_DOWN:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("llmplatform", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
