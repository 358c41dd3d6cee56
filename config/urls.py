from django.contrib import admin
from django.urls import include, path

from classifier.urls import api_urlpatterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/", include((api_urlpatterns, "api"))),
    path("", include("classifier.urls")),
]

handler400 = "classifier.web.errors.bad_request"
handler404 = "classifier.web.errors.not_found"
handler500 = "classifier.web.errors.server_error"
