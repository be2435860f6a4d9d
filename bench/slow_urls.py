"""A hosted URLconf for bench.share: the sample's pages, and a view that takes seconds without using the CPU, as a
slow report or an external call does."""

import time

from django.http import HttpResponse
from django.urls import include, path


def slow(request):
    seconds = min(float(request.GET.get("s", "2")), 10.0)
    time.sleep(seconds)
    return HttpResponse(f"took {seconds} s")


urlpatterns = [
    path("slow/", slow),
    path("", include("samples.notes.urls")),
]
