"""The app's URLs: the site's pages (namespace ``classifier``) and the JSON API under /api/
(namespace ``api``, included by config/urls.py from ``api_urlpatterns``). Each domain's views and
api modules are wired here and nowhere else.

Imports classifier.datasets.api, classifier.datasets.views, classifier.runs.api,
classifier.runs.views, classifier.serving.api, classifier.serving.views, classifier.storage.api,
classifier.storage.views, classifier.versions.api,
classifier.versions.views, classifier.web.health (besides Django and libraries); never another
domain's views or api.
"""

from django.urls import path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from classifier.datasets import api as datasets_api
from classifier.datasets import views as datasets
from classifier.runs import api as runs_api
from classifier.runs import views as runs
from classifier.serving import api as serving_api
from classifier.serving import views as classify
from classifier.storage import api as storage_api
from classifier.storage import views as storage
from classifier.versions import api as versions_api
from classifier.versions import views as versions
from classifier.web import health

app_name = "classifier"

urlpatterns = [
    path("", classify.home, name="home"),
    path("predictions/<int:pk>/", classify.prediction_detail, name="prediction_detail"),
    path("predictions/<int:pk>/photo.jpg", classify.prediction_photo, name="prediction_photo"),
    path("predictions/<int:pk>/heatmap.png", classify.prediction_heatmap, name="prediction_heatmap"),
    path("predictions/<int:pk>/feedback/", classify.prediction_feedback, name="prediction_feedback"),
    path("runs/", runs.run_list, name="run_list"),
    path("runs/new/", runs.run_new, name="run_new"),
    path("runs/compare/", runs.run_compare, name="run_compare"),
    path("runs/<int:pk>/", runs.run_detail, name="run_detail"),
    path("runs/<int:pk>/live/", runs.run_live, name="run_live"),
    path("runs/<int:pk>/curves.svg", runs.run_curves, name="run_curves"),
    path("runs/<int:pk>/validation/", runs.run_validation, name="run_validation"),
    path("runs/<int:pk>/cancel/", runs.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/rerun/", runs.run_rerun, name="run_rerun"),
    path("runs/<int:pk>/resume/", runs.run_resume, name="run_resume"),
    path("runs/<int:pk>/promote/", runs.run_promote, name="run_promote"),
    path("models/", versions.model_list, name="model_list"),
    path("models/<int:pk>/promote/", versions.model_promote, name="model_promote"),
    path("models/rollback/", versions.model_rollback, name="model_rollback"),
    path("models/import/", versions.model_import, name="model_import"),
    path("storage/", storage.storage, name="storage"),
    path("storage/<str:kind>/<int:pk>/delete/", storage.item_delete, name="storage_delete"),
    path("storage/<str:kind>/<int:pk>/restore/", storage.item_restore, name="storage_restore"),
    path("models/<int:pk>/export/", versions.model_export, name="model_export"),
    path("datasets/", datasets.dataset_list, name="dataset_list"),
    path("datasets/new/", datasets.dataset_create, name="dataset_create"),
    path("datasets/<int:pk>/", datasets.dataset_detail, name="dataset_detail"),
    path("datasets/<int:pk>/merge/", datasets.dataset_merge, name="dataset_merge"),
    path("datasets/<int:pk>/delete/", datasets.dataset_delete, name="dataset_delete"),
    path("datasets/<int:pk>/chart.svg", datasets.dataset_chart, name="dataset_chart"),
    path("datasets/<int:pk>/images/<path:relpath>", datasets.dataset_image, name="dataset_image"),
    path("datasets/<int:pk>/thumbs/<path:relpath>", datasets.dataset_thumbnail, name="dataset_thumbnail"),
]

api_urlpatterns = [
    path("health", health.health, name="health"),
    path("datasets", datasets_api.DatasetListView.as_view(), name="dataset_list"),
    path("datasets/<int:pk>", datasets_api.DatasetDetailView.as_view(), name="dataset_detail"),
    path("predict", serving_api.predict, name="predict"),
    path("models/active", serving_api.models_active, name="models_active"),
    path("runs", runs_api.RunListView.as_view(), name="run_list"),
    path("runs/<int:pk>", runs_api.RunDetailView.as_view(), name="run_detail"),
    path("runs/<int:pk>/cancel", runs_api.RunCancelView.as_view(), name="run_cancel"),
    path("models", versions_api.ModelListView.as_view(), name="model_list"),
    path("models/rollback", versions_api.ModelRollbackView.as_view(), name="model_rollback"),
    path("models/<int:pk>/promote", versions_api.ModelPromoteView.as_view(), name="model_promote"),
    path("models/<int:pk>/export", versions_api.ModelExportView.as_view(), name="model_export"),
    path("models/import", versions_api.ModelImportView.as_view(), name="model_import"),
    path("storage", storage_api.StorageView.as_view(), name="storage"),
    path("storage/<str:kind>/<int:pk>", storage_api.StorageItemView.as_view(), name="storage_item"),
    path("storage/<str:kind>/<int:pk>/restore", storage_api.StorageRestoreView.as_view(), name="storage_restore"),
    path("openapi.json", SpectacularAPIView.as_view(renderer_classes=[OpenApiJsonRenderer, OpenApiJsonRenderer2]), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
