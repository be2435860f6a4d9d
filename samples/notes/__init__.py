"""Notes: a small business application written the way an operator writes their own, and hosted by App Supervisor
in every application of a worker::

    APP_HOSTED_APPS=samples.notes APP_HOSTED_URLCONF=samples.notes.urls

Each application then has its own notes, in its own database, at /apps/<name>/ (the list), /apps/<name>/new/ (the
form) and /apps/<name>/api/notes/ (JSON), beside its admin at /apps/<name>/admin/ (where notes can be managed too).
The pages ask for the application's own login, the admin's. Nothing here knows about App Supervisor: it is a plain
Django app, and would run the same in any Django project with the admin.
"""
