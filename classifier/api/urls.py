from django.urls import path
from drf_spectacular.renderers import OpenApiJsonRenderer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from classifier.api import datasets, predict, runs, versions, views

app_name = "api"

urlpatterns = [
    path("health", views.health, name="health"),
    path("datasets", datasets.DatasetListView.as_view(), name="dataset_list"),
    path("datasets/<int:pk>", datasets.DatasetDetailView.as_view(), name="dataset_detail"),
    path("predict", predict.predict, name="predict"),
    path("models/active", predict.models_active, name="models_active"),
    path("runs", runs.RunListView.as_view(), name="run_list"),
    path("runs/<int:pk>", runs.RunDetailView.as_view(), name="run_detail"),
    path("runs/<int:pk>/cancel", runs.RunCancelView.as_view(), name="run_cancel"),
    path("models", versions.ModelListView.as_view(), name="model_list"),
    path("models/rollback", versions.ModelRollbackView.as_view(), name="model_rollback"),
    path("models/<int:pk>/promote", versions.ModelPromoteView.as_view(), name="model_promote"),
    path("openapi.json", SpectacularAPIView.as_view(renderer_classes=[OpenApiJsonRenderer]), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
