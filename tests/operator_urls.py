"""An operator's URLconf with the mistakes operators make, for the tests (APP_HOSTED_URLCONF=tests.operator_urls):
a view that raises, a view that takes seconds (a slow report, an external call), and a pattern at admin/, which the
hosted admin must keep. The rest is the sample's."""

import time

from django.http import HttpResponse
from django.urls import include, path


def broken(request):
    raise ZeroDivisionError("the operator's bug")


def slow(request):
    seconds = min(float(request.GET.get("s", "2")), 10.0)
    time.sleep(seconds)
    return HttpResponse(f"took {seconds} s")


urlpatterns = [
    path("admin/", lambda request: HttpResponse("the operator's page at admin/")),
    path("broken/", broken),
    path("slow/", slow),
    path("", include("samples.notes.urls")),
]
