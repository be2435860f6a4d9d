"""An operator's URLconf with the mistakes operators make, for the tests (APP_HOSTED_URLCONF=tests.operator_urls):
a view that raises, and a pattern at admin/, which the hosted admin must keep. The rest is the sample's."""

from django.http import HttpResponse
from django.urls import include, path


def broken(request):
    raise ZeroDivisionError("the operator's bug")


urlpatterns = [
    path("admin/", lambda request: HttpResponse("the operator's page at admin/")),
    path("broken/", broken),
    path("", include("samples.notes.urls")),
]
