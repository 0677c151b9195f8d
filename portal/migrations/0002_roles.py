"""Create the viewer / operator / admin groups with the permissions of portal/roles.py."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# Frozen copy: a migration must not import code that may change later.
VIEW = [
    "accounts.view_agentidentity",
    "accounts.view_ecraccount",
    "accounts.view_externalid",
    "accounts.view_brokerinstance",
    "provisioning.view_run",
    "provisioning.view_operation",
    "provisioning.view_runlogentry",
    "portal.view_auditentry",
]
OPERATE = ["accounts.onboard_ecraccount", "accounts.download_brokerinstance", "provisioning.request_audit"]
ADMINISTER = [
    "accounts.manage_agentidentity",
    "accounts.offboard_ecraccount",
    "auth.view_user",
    "auth.add_user",
    "auth.change_user",
    "auth.view_group",
]
ROLES = {"viewer": VIEW, "operator": VIEW + OPERATE, "admin": VIEW + OPERATE + ADMINISTER}


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations; roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_initial"),
        ("accounts", "0001_initial"),
        ("provisioning", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
