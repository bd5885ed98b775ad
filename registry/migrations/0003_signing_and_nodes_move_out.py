# RootMetadata, SignedApprovedSet and NodeReport moved to the `signing` and
# `nodes` apps (issue 12). Their tables stay: this removes them from
# registry's state only, after the new apps have taken them over.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0002_signing_and_node_reports'),
        ('signing', '0001_initial'),
        ('nodes', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='SignedApprovedSet'),
                migrations.DeleteModel(name='RootMetadata'),
                migrations.DeleteModel(name='NodeReport'),
            ],
            database_operations=[],
        ),
    ]
