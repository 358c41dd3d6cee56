from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/", include("classifier.api.urls")),
    path("", include("classifier.urls")),
]

handler400 = "classifier.views.errors.bad_request"
handler404 = "classifier.views.errors.not_found"
handler500 = "classifier.views.errors.server_error"
