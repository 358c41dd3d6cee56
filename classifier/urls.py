from django.urls import path

from classifier.views import classify, datasets, runs, versions

app_name = "classifier"

urlpatterns = [
    path("", classify.home, name="home"),
    path("runs/", runs.run_list, name="run_list"),
    path("runs/<int:pk>/", runs.run_detail, name="run_detail"),
    path("models/", versions.model_list, name="model_list"),
    path("datasets/", datasets.dataset_list, name="dataset_list"),
    path("datasets/<int:pk>/", datasets.dataset_list, name="dataset_detail"),
]
