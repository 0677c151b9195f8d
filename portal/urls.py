from django.contrib import admin
from django.urls import include, path
from mozilla_django_oidc import views as oidc_views

from . import login, sso, token_views, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("login/", login.LoginView.as_view(), name="login"),
    # Ends the provider's session too for a user who signed in through it (sso.provider_logout_url).
    path("logout/", oidc_views.OIDCLogoutView.as_view(), name="logout"),
    path(
        "oidc/authenticate/",
        sso.sso_only(oidc_views.OIDCAuthenticationRequestView.as_view()),
        name="oidc_authentication_init",
    ),
    path(
        "oidc/callback/",
        sso.sso_only(oidc_views.OIDCAuthenticationCallbackView.as_view()),
        name="oidc_authentication_callback",
    ),
    path("admin/", admin.site.urls),
    path("api/", include("portal.api.urls")),
    path("tokens/", token_views.api_token_list, name="api_tokens"),
    path("tokens/<int:pk>/revoke/", token_views.api_token_revoke, name="api_token_revoke"),
    path("", include("accounts.urls")),
    path("", include("provisioning.urls")),
]

handler404 = "portal.views.not_found"
