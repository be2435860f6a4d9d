"""Notes' pages and API, relative to where they are mounted: /apps/<name>/ in a hosted application."""

from django.urls import path

from . import views

app_name = "notes"
urlpatterns = [
    path("", views.note_list, name="list"),
    path("new/", views.note_form, name="new"),
    path("<int:pk>/", views.note_form, name="edit"),
    path("api/notes/", views.api_notes, name="api"),
]
