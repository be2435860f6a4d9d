def build(django_application):
    """The worker web's ASGI application: hosted applications under /apps/<name>/."""
    return django_application
