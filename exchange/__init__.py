"""What the supervisor and the workers exchange through Redis: names, connections, the configuration cache,
runtime statuses, the environment registry, the command channel and events.

Both sides import from here, and this package imports neither side: the supervisor (apps, environments, proxy)
and the workers (workers) never import each other.
"""
