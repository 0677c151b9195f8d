"""The roles get the Snyk inventory: every role reads it; operators and admins may download a
deployment's files (they hold the Broker App's client secret)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# Frozen copy: a migration must not import code that may change later.
VIEW = ["view_snyktenant", "view_snykdeployment", "view_snykconnection"]
GRANTS = {
    "viewer": VIEW,
    "operator": [*VIEW, "download_snykdeployment"],
    "admin": [*VIEW, "download_snykdeployment"],
}


def grant(apps, schema_editor):
    # Permissions are normally created after all migrations; the roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in GRANTS.items():
        group = Group.objects.filter(name=role).first()
        if group is not None:
            group.permissions.add(
                *Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
            )


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    codenames = {c for names in GRANTS.values() for c in names}
    for group in apps.get_model("auth", "Group").objects.filter(name__in=GRANTS):
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
        )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0008_snyk_inventory"), ("portal", "0002_roles")]
    operations = [migrations.RunPython(grant, revoke)]
