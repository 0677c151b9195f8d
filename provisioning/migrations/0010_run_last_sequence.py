from django.db import migrations, models
from django.db.models import Max, OuterRef, Subquery
from django.db.models.functions import Coalesce


def seed_counters(apps, schema_editor):
    """Each run's counter starts at its largest operation sequence (a run may be taken over later)."""
    Run = apps.get_model("provisioning", "Run")
    Operation = apps.get_model("provisioning", "Operation")
    last = (
        Operation.objects.filter(run=OuterRef("pk")).order_by().values("run").annotate(last=Max("sequence")).values("last")
    )
    Run.objects.update(last_sequence=Coalesce(Subquery(last), 0))


class Migration(migrations.Migration):

    dependencies = [
        ("provisioning", "0009_run_kind_app_secret"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="last_sequence",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunPython(seed_counters, migrations.RunPython.noop),
    ]
