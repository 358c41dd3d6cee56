from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from classifier.api import views

app_name = "api"

urlpatterns = [
    path("health", views.health, name="health"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
]
