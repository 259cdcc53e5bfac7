from django.db import migrations


class Migration(migrations.Migration):
    """AuditEntry.source was never written (always empty): drop it."""

    dependencies = [
        ("servers", "0010_tls_defaults"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="auditentry",
            name="source",
        ),
    ]
