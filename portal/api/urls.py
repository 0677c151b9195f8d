from django.contrib.auth.decorators import login_not_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from . import docs, views

app_name = "api"

urlpatterns = [
    # The contract is public (it holds no data); the docs page is a page like the others.
    path("schema/", login_not_required(SpectacularAPIView.as_view()), name="schema"),
    path("docs/", docs.api_docs, name="docs"),
    path("v1/agents/", views.AgentList.as_view(), name="agent_list"),
    path("v1/agents/<int:pk>/", views.AgentDetail.as_view(), name="agent_detail"),
    path("v1/agents/<int:pk>/preview/", views.AgentPreview.as_view(), name="agent_preview"),
    path("v1/agents/<int:pk>/apply/", views.AgentApply.as_view(), name="agent_apply"),
    path("v1/accounts/", views.AccountList.as_view(), name="account_list"),
    path("v1/accounts/<str:account_id>/", views.AccountDetail.as_view(), name="account_detail"),
    path("v1/accounts/<str:account_id>/preview/", views.AccountPreview.as_view(), name="account_preview"),
    path("v1/accounts/<str:account_id>/apply/", views.AccountApply.as_view(), name="account_apply"),
    path("v1/brokers/", views.BrokerList.as_view(), name="broker_list"),
    path("v1/brokers/<int:pk>/", views.BrokerDetail.as_view(), name="broker_detail"),
    path("v1/brokers/<int:pk>/files/<str:fmt>/", views.BrokerFile.as_view(), name="broker_download"),
    path("v1/runs/", views.RunList.as_view(), name="run_list"),
    path("v1/runs/<int:pk>/", views.RunDetail.as_view(), name="run_detail"),
    path("v1/runs/<int:pk>/operations/", views.RunOperations.as_view(), name="run_operations"),
    path("v1/runs/<int:pk>/cancel/", views.RunCancel.as_view(), name="run_cancel"),
    path("v1/audit/", views.AuditList.as_view(), name="audit_list"),
    path("v1/audit/refresh/", views.AuditRefresh.as_view(), name="audit_refresh"),
]
