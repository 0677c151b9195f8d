from django.shortcuts import get_object_or_404, render

from .models import Run


def run_list(request):
    return render(request, "provisioning/run_list.html", {"runs": Run.objects.all()[:100]})


def run_detail(request, pk):
    run = get_object_or_404(Run, pk=pk)
    return render(request, "provisioning/run_detail.html", {"run": run, "operations": run.operations.all()})
