from django.shortcuts import get_object_or_404, render

from .models import AgentIdentity, EcrAccount


def agent_list(request):
    return render(request, "accounts/agentidentity_list.html", {"agents": AgentIdentity.objects.all()})


def agent_detail(request, pk):
    agent = get_object_or_404(AgentIdentity, pk=pk)
    return render(request, "accounts/agentidentity_detail.html", {"agent": agent})


def account_list(request):
    accounts = EcrAccount.objects.select_related("agent")
    return render(request, "accounts/ecraccount_list.html", {"accounts": accounts})


def account_detail(request, account_id):
    account = get_object_or_404(EcrAccount.objects.select_related("agent"), account_id=account_id)
    return render(request, "accounts/ecraccount_detail.html", {"account": account})
