from django.db import migrations, models


class Migration(migrations.Migration):
    """AUTH only after STARTTLS, as its own setting: new servers off loopback start with it on.

    Existing servers keep their behaviour (the field starts off for them); the console warns
    wherever passwords may still be sent unencrypted.
    """

    dependencies = [
        ("servers", "0009_secrets_and_quota_ceiling"),
    ]

    operations = [
        migrations.AddField(
            model_name="virtualserver",
            name="auth_requires_tls",
            field=models.BooleanField(default=False),
        ),
    ]
