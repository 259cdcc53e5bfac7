"""A quota ceiling per domain; smart-host passwords encrypted at rest (existing ones encrypted here)."""

from django.db import migrations, models

from servers import stored_secrets


def encrypt_passwords(apps, schema_editor):
    for model_name, field in (("DeliverySettings", "smart_host_password"), ("RemoteDomainRoute", "password")):
        model = apps.get_model("servers", model_name)
        for row in model.objects.exclude(**{field: ""}).only("pk", field):
            value = getattr(row, field)
            if not stored_secrets.is_concealed(value):
                model.objects.filter(pk=row.pk).update(**{field: stored_secrets.conceal(value)})


def decrypt_passwords(apps, schema_editor):
    for model_name, field in (("DeliverySettings", "smart_host_password"), ("RemoteDomainRoute", "password")):
        model = apps.get_model("servers", model_name)
        for row in model.objects.exclude(**{field: ""}).only("pk", field):
            value = getattr(row, field)
            if stored_secrets.is_concealed(value):
                model.objects.filter(pk=row.pk).update(**{field: stored_secrets.reveal(value)})


class Migration(migrations.Migration):

    dependencies = [
        ("servers", "0008_worker_exit_diagnosis"),
    ]

    operations = [
        migrations.AddField(
            model_name="domain",
            name="max_mailbox_quota_mb",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="deliverysettings",
            name="smart_host_password",
            field=models.CharField(blank=True, default="", max_length=1000),
        ),
        migrations.AlterField(
            model_name="remotedomainroute",
            name="password",
            field=models.CharField(blank=True, default="", max_length=1000),
        ),
        migrations.RunPython(encrypt_passwords, decrypt_passwords),
    ]
