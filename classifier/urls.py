from django.urls import path

from classifier.views import classify, datasets, runs, versions

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
    path("runs/<int:pk>/promote/", runs.run_promote, name="run_promote"),
    path("models/", versions.model_list, name="model_list"),
    path("models/<int:pk>/promote/", versions.model_promote, name="model_promote"),
    path("models/rollback/", versions.model_rollback, name="model_rollback"),
    path("datasets/", datasets.dataset_list, name="dataset_list"),
    path("datasets/new/", datasets.dataset_create, name="dataset_create"),
    path("datasets/<int:pk>/", datasets.dataset_detail, name="dataset_detail"),
    path("datasets/<int:pk>/merge/", datasets.dataset_merge, name="dataset_merge"),
    path("datasets/<int:pk>/delete/", datasets.dataset_delete, name="dataset_delete"),
    path("datasets/<int:pk>/chart.svg", datasets.dataset_chart, name="dataset_chart"),
    path("datasets/<int:pk>/images/<path:relpath>", datasets.dataset_image, name="dataset_image"),
    path("datasets/<int:pk>/thumbs/<path:relpath>", datasets.dataset_thumbnail, name="dataset_thumbnail"),
]
