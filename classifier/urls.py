from django.urls import path

from classifier.views import classify, datasets, runs, versions

app_name = "classifier"

urlpatterns = [
    path("", classify.home, name="home"),
    path("runs/", runs.run_list, name="run_list"),
    path("runs/<int:pk>/", runs.run_detail, name="run_detail"),
    path("models/", versions.model_list, name="model_list"),
    path("datasets/", datasets.dataset_list, name="dataset_list"),
    path("datasets/new/", datasets.dataset_create, name="dataset_create"),
    path("datasets/<int:pk>/", datasets.dataset_detail, name="dataset_detail"),
    path("datasets/<int:pk>/merge/", datasets.dataset_merge, name="dataset_merge"),
    path("datasets/<int:pk>/delete/", datasets.dataset_delete, name="dataset_delete"),
    path("datasets/<int:pk>/chart.svg", datasets.dataset_chart, name="dataset_chart"),
    path("datasets/<int:pk>/images/<path:relpath>", datasets.dataset_image, name="dataset_image"),
    path("datasets/<int:pk>/thumbs/<path:relpath>", datasets.dataset_thumbnail, name="dataset_thumbnail"),
]
