"""monitoring.queues: what the queue dashboard (django-rq) connects with."""

import redis

from monitoring import queues


def test_the_embedded_redis_socket_url_reaches_the_server(settings, tmp_path):
    from exchange import redis_client

    settings.APP_COMMAND_REDIS_URL = ""  # the default: the embedded Redis, on a unix socket
    settings.APP_STORAGE_DIR = tmp_path
    try:
        url = queues.connection_url()
        assert url.startswith("unix:///")
        client = redis.Redis.from_url(url)
        assert client.ping() is True
        assert client.connection_pool.connection_kwargs["socket_timeout"] == redis_client.SOCKET_TIMEOUT
    finally:
        redis_client.stop_embedded()


def test_a_tcp_url_keeps_its_host_database_and_options(settings):
    settings.APP_COMMAND_REDIS_URL = "redis://:pw@redis.internal:6380/3?socket_timeout=9"
    url = queues.connection_url()
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("redis.internal", 6380, 3, "pw")
    assert kwargs["socket_timeout"] == 9.0 and kwargs["socket_connect_timeout"] is not None
