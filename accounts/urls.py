from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("agents/", views.agent_list, name="agent_list"),
    path("agents/<int:pk>/", views.agent_detail, name="agent_detail"),
    path("accounts/", views.account_list, name="account_list"),
    path("accounts/<str:account_id>/", views.account_detail, name="account_detail"),
]
