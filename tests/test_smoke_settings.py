def test_settings_load_with_nothing_configured(settings):
    assert settings.APP_HEARTBEAT_TIMEOUT == 2 * settings.APP_HEARTBEAT_INTERVAL + 20


def test_redis_fixture_is_a_real_server(r):
    r.set("k", "v")
    assert r.get("k") == b"v"
