from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "App Supervisor"
admin.site.site_title = "App Supervisor"
admin.site.index_title = "Environments and applications"

urlpatterns = [
    path("admin/", admin.site.urls),
]
