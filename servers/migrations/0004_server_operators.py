from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("servers", "0003_smtp_policy"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="virtualserver",
            name="operators",
            field=models.ManyToManyField(blank=True, related_name="operated_servers", to=settings.AUTH_USER_MODEL),
        ),
    ]
