from django.urls import path
from drf_spectacular.renderers import OpenApiJsonRenderer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from classifier.api import datasets, views

app_name = "api"

urlpatterns = [
    path("health", views.health, name="health"),
    path("datasets", datasets.DatasetListView.as_view(), name="dataset_list"),
    path("datasets/<int:pk>", datasets.DatasetDetailView.as_view(), name="dataset_detail"),
    path("openapi.json", SpectacularAPIView.as_view(renderer_classes=[OpenApiJsonRenderer]), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
