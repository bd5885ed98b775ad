# NodeReport moved here from `registry` (issue 12). Its table keeps the name
# registry gave it, so this migration changes Django's state only;
# registry/migrations/0003 drops it from registry's state.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def content_types_to_nodes(apps, schema_editor):
    """Keep the admin log and permissions of an existing database with the moved model."""
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label="registry", model="nodereport").update(app_label="nodes")


def content_types_to_registry(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label="nodes", model="nodereport").update(app_label="registry")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('registry', '0002_signing_and_node_reports'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='NodeReport',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('signed_set_version', models.PositiveIntegerField(blank=True, null=True)),
                        ('approved_set_version', models.PositiveIntegerField(blank=True, null=True)),
                        ('models', models.JSONField(blank=True, default=list)),
                        ('summary', models.JSONField(blank=True, default=dict)),
                        ('period_start', models.DateTimeField(blank=True, null=True)),
                        ('period_end', models.DateTimeField(blank=True, null=True)),
                        ('received_at', models.DateTimeField(db_index=True)),
                        ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='node_reports', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'registry_nodereport',
                        'ordering': ['-received_at', '-id'],
                        'indexes': [models.Index(fields=['node', '-received_at'], name='node_report_latest')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_nodes, content_types_to_registry),
    ]
