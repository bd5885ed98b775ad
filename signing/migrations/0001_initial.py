# The signing models moved here from `registry` (issue 12). Their tables keep
# the names registry gave them, so this migration changes Django's state only;
# registry/migrations/0003 drops them from registry's state.

import django.db.models.deletion
from django.db import migrations, models


def content_types_to_signing(apps, schema_editor):
    """Keep the admin log and permissions of an existing database with the moved models."""
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label="registry", model__in=["rootmetadata", "signedapprovedset"]).update(
        app_label="signing"
    )


def content_types_to_registry(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label="signing", model__in=["rootmetadata", "signedapprovedset"]).update(
        app_label="registry"
    )


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('registry', '0002_signing_and_node_reports'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='RootMetadata',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('version', models.PositiveIntegerField(unique=True)),
                        ('document', models.BinaryField()),
                        ('cid', models.CharField(max_length=128)),
                        ('expires', models.DateTimeField()),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('pin_status', models.CharField(choices=[('pending', 'Pending'), ('pinned', 'Pinned'), ('failed', 'Failed')], default='pending', max_length=16)),
                    ],
                    options={
                        'verbose_name': 'root metadata',
                        'verbose_name_plural': 'root metadata',
                        'db_table': 'registry_rootmetadata',
                        'ordering': ['-version'],
                    },
                ),
                migrations.CreateModel(
                    name='SignedApprovedSet',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('version', models.PositiveIntegerField(unique=True)),
                        ('root_version', models.PositiveIntegerField()),
                        ('document', models.BinaryField()),
                        ('cid', models.CharField(max_length=128)),
                        ('signed_at', models.DateTimeField()),
                        ('expires', models.DateTimeField(db_index=True)),
                        ('pin_status', models.CharField(choices=[('pending', 'Pending'), ('pinned', 'Pinned'), ('failed', 'Failed')], default='pending', max_length=16)),
                        ('approved_set', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='signings', to='registry.approvedset')),
                    ],
                    options={
                        'db_table': 'registry_signedapprovedset',
                        'ordering': ['-version'],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_signing, content_types_to_registry),
    ]
