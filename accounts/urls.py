from django.urls import path

from . import lifecycle_views, views

app_name = "accounts"

urlpatterns = [
    path("agents/", views.agent_list, name="agent_list"),
    path("agents/add/", views.agent_add, name="agent_add"),
    path("agents/<int:pk>/", views.agent_detail, name="agent_detail"),
    path("agents/<int:pk>/plan/", views.agent_plan, name="agent_plan"),
    path("agents/<int:pk>/setup/", views.agent_setup, name="agent_setup"),
    path("agents/<int:pk>/runtime/", views.agent_runtime, name="agent_runtime"),
    path("agents/<int:pk>/access-key/", views.agent_access_key, name="agent_access_key"),
    path("accounts/", views.account_list, name="account_list"),
    path("accounts/onboard/", views.account_onboard, name="account_onboard"),
    path("accounts/onboard/validate/", views.account_onboard_validate, name="account_onboard_validate"),
    path("accounts/<str:account_id>/", views.account_detail, name="account_detail"),
    path("accounts/<str:account_id>/live-trust/", views.account_live_trust, name="account_live_trust"),
    path("accounts/<str:account_id>/plan/", views.account_plan, name="account_plan"),
    path("accounts/<str:account_id>/apply/", views.account_apply, name="account_apply"),
    path("brokers/<int:pk>/download/<str:fmt>/", views.broker_download, name="broker_download"),
    # Lifecycle: rotation, offboarding, bulk onboarding (accounts/lifecycle_views.py).
    path("accounts/onboard/file/", lifecycle_views.account_onboard_file, name="account_onboard_file"),
    path("accounts/<str:account_id>/rotate/", lifecycle_views.external_id_rotate, name="external_id_rotate"),
    path(
        "accounts/<str:account_id>/external-ids/<int:external_id_pk>/retire/",
        lifecycle_views.external_id_retire,
        name="external_id_retire",
    ),
    path("accounts/<str:account_id>/offboard/", lifecycle_views.account_offboard, name="account_offboard"),
    path("agents/<int:pk>/offboard/", lifecycle_views.agent_offboard, name="agent_offboard"),
    path(
        "brokers/<int:pk>/redeployed/",
        lifecycle_views.broker_redeployed_confirm,
        name="broker_redeployed_confirm",
    ),
]
