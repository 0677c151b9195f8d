from django.urls import path

from . import audit_views, org_views, snyk_views, views

app_name = "provisioning"

urlpatterns = [
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/progress/", views.run_progress, name="run_progress"),
    path("runs/<int:pk>/operations/", views.run_operations, name="run_operations"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("organizations/", org_views.organization_list, name="organization_list"),
    path("organizations/connect/", org_views.organization_connect, name="organization_connect"),
    path("organizations/<slug:name>/", org_views.organization_detail, name="organization_detail"),
    path("organizations/<slug:name>/rules/add/", org_views.rule_add, name="organization_rule_add"),
    path(
        "organizations/<slug:name>/discover/", org_views.organization_discover, name="organization_discover"
    ),
    path("organizations/<slug:name>/sync/", org_views.organization_sync, name="organization_sync"),
    path(
        "organizations/<slug:name>/sync/confirm/",
        org_views.organization_sync_confirm,
        name="organization_sync_confirm",
    ),
    path("audit/", audit_views.audit_list, name="audit_list"),
    path("audit/refresh/", audit_views.audit_refresh, name="audit_refresh"),
    path("audit/export.csv", audit_views.audit_csv, name="audit_csv"),
    path("audit/export.json", audit_views.audit_json, name="audit_json"),
    path("audit/accounts/<str:account_id>/", audit_views.audit_detail, name="audit_detail"),
    path("snyk/", snyk_views.snyk_overview, name="snyk_overview"),
    path("snyk/sync/", snyk_views.snyk_sync, name="snyk_sync"),
    path("snyk/app-secret/", snyk_views.snyk_app_secret_rotate, name="snyk_app_secret_rotate"),
    path("snyk/agents/<int:pk>/broker-mode/", snyk_views.agent_broker_mode, name="agent_broker_mode"),
    path("snyk/brokers/<int:pk>/org/", snyk_views.snyk_org_map, name="snyk_org_map"),
    path(
        "snyk/deployments/<int:pk>/download/<str:fmt>/",
        snyk_views.deployment_download,
        name="deployment_download",
    ),
]
