"""supervisor_project.config: every bad or contradictory value stops start-up with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor_project.config import BASE_DIR, ConfigError, load

from .processes import SUPERVISOR_KEY, environment_key, supervisor_public_key

SECRET = {"APP_SUPERVISOR_KEY": SUPERVISOR_KEY}
WORKER_KEYS = {"APP_ENVIRONMENT_KEY": environment_key("env_a"), "APP_SUPERVISOR_PUBLIC_KEYS": supervisor_public_key()}
SUPERVISOR = {"APP_MODE": "supervisor", **SECRET}
WORKER = {
    **WORKER_KEYS,
    "APP_MODE": "worker",
    "ENVIRONMENT_NAME": "env_a",
    "ENVIRONMENT_URL": "http://localhost:15000",
}


def problems_of(environ):
    with pytest.raises(ConfigError) as info:
        load(environ)
    return info.value.problems, str(info.value)


def test_nothing_set_is_a_valid_single_instance(tmp_path):
    config = load({})
    assert config.mode == ""
    assert config.process_adapter == "local"
    assert config.discovery_adapter == "local"
    assert config.database["ENGINE"] == "django.db.backends.sqlite3"


def test_supervisor_and_worker_as_the_reference_configures_them():
    supervisor = load(
        {
            **SUPERVISOR,
            "APP_DISCOVERY_ADAPTER": "remote",
            "APP_PROCESS_ADAPTER": "remote",
            "APP_SUPERVISOR_REDIS_URL": "redis://redis:6379/0",
            "APP_COMMAND_ADPATER": "redis",
            "APP_COMMAND_REDIS_URL": "redis://redis:6379/0",
        }
    )
    assert (supervisor.mode, supervisor.process_adapter, supervisor.discovery_adapter) == ("supervisor", "remote", "remote")
    worker = load(dict(WORKER, APP_PROCESS_ADAPTER="local", ENVIRONMENT_PROXY_URL="http://worker-a/"))
    assert worker.is_worker
    assert worker.environment_proxy_url == "http://worker-a"


@pytest.mark.parametrize(
    "variable, value, base",
    [
        ("APP_MODE", "bogus", {}),
        ("APP_DISCOVERY_ADAPTER", "etcd", {}),
        ("APP_PROCESS_ADAPTER", "docker", {}),
        ("APP_COMMAND_ADAPTER", "kafka", {}),
        ("APP_COMMAND_ADPATER", "kafka", {}),
        ("APP_SUPERVISOR_REDIS_URL", "http://redis:6379", {}),
        ("APP_COMMAND_REDIS_URL", "mysql://redis/0", {}),
        ("APP_HEARTBEAT_INTERVAL", "often", {}),
        ("APP_HEARTBEAT_INTERVAL", "0", {}),
        ("APP_HEARTBEAT_TIMEOUT", "-5", {}),
        ("APP_HEARTBEAT_TIMEOUT", "10", {"APP_HEARTBEAT_INTERVAL": "30"}),
        ("DB_DIALECT", "oracle", {}),
        ("DB_PORT", "fivefourthreetwo", {"DB_DIALECT": "postgres", "DB_DATABASE": "x"}),
        ("DB_DATABASE", "", {"DB_DIALECT": "postgres"}),
        ("DEBUG", "maybe", {}),
        ("ENVIRONMENT_NAME", "Env A", WORKER),
        ("ENVIRONMENT_URL", "ftp://worker-a", WORKER),
        ("ENVIRONMENT_URL", "worker-a:15000", WORKER),
        ("ENVIRONMENT_PROXY_URL", "not a url", WORKER),
        ("DATABASE_URL", "garbage", {}),  # django-environ returns {} for it rather than raising
        ("DATABASE_URL", "oracle://u:p@db:1521/x", {}),  # a backend the project does not support
        ("APP_PROXY_CONNECT_TIMEOUT", "soon", SUPERVISOR),
        ("APP_PROXY_CONNECT_TIMEOUT", "0", SUPERVISOR),
        ("APP_PROXY_READ_TIMEOUT", "-1", SUPERVISOR),
        ("APP_PROXY_READ_TIMEOUT", "nan", SUPERVISOR),
        ("APP_PROXY_READ_TIMEOUT", "inf", SUPERVISOR),
        ("APP_HOSTED_APPS", "no.such.app", {}),
        ("APP_APP_CONCURRENCY", "0", WORKER),
        ("APP_APP_CONCURRENCY", "5", dict(WORKER, APP_WEB_THREADS="4")),
        ("APP_APP_CONCURRENCY", "half", WORKER),
        ("APP_APP_QUEUE", "-1", WORKER),
        ("APP_APP_QUEUE_WAIT", "0", WORKER),
        ("APP_APP_TIMEOUT", "1.5", WORKER),
        ("APP_AUDIT_DAYS", "0", SUPERVISOR),
        ("APP_AUDIT_DAYS", "ninety", SUPERVISOR),
        ("APP_AUDIT_DAYS", "3651", SUPERVISOR),
        ("APP_UPGRADE_CONCURRENCY", "0", SUPERVISOR),
        ("APP_UPGRADE_CONCURRENCY", "65", SUPERVISOR),
        ("APP_AUTO_UPGRADE", "sometimes", SUPERVISOR),
        ("APP_UPGRADE_BACKUP", "maybe", SUPERVISOR),
        ("APP_BACKUP_SCHEDULE", "every day", SUPERVISOR),
        ("APP_BACKUP_SCHEDULE", "0 3 * * * *", SUPERVISOR),
        ("APP_BACKUP_SCHEDULE", "61 3 * * *", SUPERVISOR),
        ("APP_BACKUP_KEEP", "0", SUPERVISOR),
        ("APP_BACKUP_STORAGE", "ftp", SUPERVISOR),
        ("APP_BACKUP_S3_BUCKET", "", dict(SUPERVISOR, APP_BACKUP_STORAGE="s3")),
        ("APP_BACKUP_S3_ENDPOINT_URL", "minio:9000", dict(SUPERVISOR, APP_BACKUP_STORAGE="s3",
                                                          APP_BACKUP_S3_BUCKET="b")),
    ],
)
@pytest.mark.filterwarnings("ignore:Engine not recognized")
def test_a_bad_value_is_refused_naming_the_variable(variable, value, base):
    problems, message = problems_of(dict(base, **{variable: value}))
    assert len(problems) == 1, problems
    assert variable in problems[0]
    assert message.startswith("App Supervisor cannot start")
    assert variable in message


def test_all_problems_are_reported_at_once():
    problems, _ = problems_of({"APP_MODE": "bogus", "DB_DIALECT": "oracle", "APP_HEARTBEAT_INTERVAL": "x"})
    assert len(problems) == 3
    assert [v for v in ("APP_MODE", "DB_DIALECT", "APP_HEARTBEAT_INTERVAL") if any(v in p for p in problems)] == [
        "APP_MODE",
        "DB_DIALECT",
        "APP_HEARTBEAT_INTERVAL",
    ]


@pytest.mark.parametrize(
    "mode, adapter, expected",
    [("supervisor", "local", "remote"), ("worker", "remote", "local"), ("", "remote", "local")],
)
def test_a_process_adapter_contradicting_the_mode_is_refused(mode, adapter, expected):
    environ = dict(WORKER) if mode == "worker" else dict(SECRET if mode == "supervisor" else {}, APP_MODE=mode)
    problems, _ = problems_of(dict(environ, APP_PROCESS_ADAPTER=adapter))
    assert len(problems) == 1
    assert "APP_PROCESS_ADAPTER" in problems[0] and "contradicts" in problems[0]
    assert f"APP_PROCESS_ADAPTER={expected}" in problems[0]


def test_the_misspelt_command_adapter_alias_is_accepted():
    assert load({"APP_COMMAND_ADPATER": "redis"})
    assert load({"APP_COMMAND_ADAPTER": "redis", "APP_COMMAND_ADPATER": "redis"})


def test_the_alias_disagreeing_with_the_variable_is_refused():
    problems, _ = problems_of({"APP_COMMAND_ADAPTER": "redis", "APP_COMMAND_ADPATER": "kafka"})
    assert any("APP_COMMAND_ADAPTER" in p and "APP_COMMAND_ADPATER" in p and "disagree" in p for p in problems)


def test_a_worker_needs_its_environment_name_and_url():
    problems, _ = problems_of(dict(WORKER_KEYS, APP_MODE="worker"))
    assert len(problems) == 2
    assert any(p.startswith("ENVIRONMENT_NAME is required") for p in problems)
    assert any(p.startswith("ENVIRONMENT_URL is required") for p in problems)


def test_the_environment_variables_are_not_required_of_a_supervisor():
    config = load(SUPERVISOR)
    assert config.environment_name == ""


def test_the_proxy_url_defaults_to_the_environment_url():
    assert load(WORKER).environment_proxy_url == "http://localhost:15000"


@pytest.mark.parametrize("interval, timeout", [(None, 260), ("5", 30), ("120", 260), ("1", 22)])
def test_the_heartbeat_timeout_defaults_to_twice_the_interval_plus_20(interval, timeout):
    config = load({} if interval is None else {"APP_HEARTBEAT_INTERVAL": interval})
    assert config.heartbeat_timeout == timeout
    assert config.heartbeat_interval == (120 if interval is None else int(interval))


def test_an_explicit_heartbeat_timeout_is_kept():
    assert load({"APP_HEARTBEAT_INTERVAL": "5", "APP_HEARTBEAT_TIMEOUT": "7"}).heartbeat_timeout == 7


def test_the_audit_log_keeps_90_days_unless_told_otherwise():
    assert load(SUPERVISOR).audit_days == 90
    assert load({**SUPERVISOR, "APP_AUDIT_DAYS": "365"}).audit_days == 365


def test_the_proxy_timeouts_have_defaults_and_take_fractions_of_a_second():
    config = load(SUPERVISOR)
    assert (config.proxy_connect_timeout, config.proxy_read_timeout) == (5.0, 60.0)
    config = load({**SUPERVISOR, "APP_PROXY_CONNECT_TIMEOUT": "0.5", "APP_PROXY_READ_TIMEOUT": "300"})
    assert (config.proxy_connect_timeout, config.proxy_read_timeout) == (0.5, 300.0)


def test_the_default_database_is_sqlite_under_the_storage_directory(tmp_path):
    config = load({"APP_STORAGE_DIR": str(tmp_path), **SUPERVISOR})
    assert config.storage_dir == tmp_path.resolve()
    assert config.database["ENGINE"] == "django.db.backends.sqlite3"
    assert config.database["NAME"] == str(tmp_path / "supervisor.sqlite3")
    assert load({}).storage_dir == BASE_DIR / "storage"


def test_sqlite_takes_db_database_as_its_file():
    config = load({"DB_DIALECT": "sqlite", "DB_DATABASE": "/data/own.sqlite3"})
    assert config.database["NAME"] == "/data/own.sqlite3"


def test_sqlite_transactions_wait_for_the_write_lock_instead_of_failing_on_upgrade():
    # The web, the controller and management commands write to the same file at once.
    assert load({}).database["OPTIONS"] == {"transaction_mode": "IMMEDIATE", "timeout": 20}


@pytest.mark.parametrize("dialect", ["postgres", "postgresql", "POSTGRES"])
def test_the_seed_db_variables_describe_a_postgres_database(dialect):
    config = load(
        {
            "DB_DIALECT": dialect,
            "DB_HOST": "db.internal",
            "DB_PORT": "5433",
            "DB_DATABASE": "appsup_supervisor",
            "DB_USER": "appsup",
            "DB_PASSWORD": "s3cret",
        }
    )
    assert config.database == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "appsup_supervisor",
        "HOST": "db.internal",
        "PORT": "5433",
        "USER": "appsup",
        "PASSWORD": "s3cret",
    }


def test_postgres_defaults_for_host_port_and_user():
    database = load({"DB_DIALECT": "postgres", "DB_DATABASE": "x"}).database
    assert (database["HOST"], database["PORT"], database["USER"], database["PASSWORD"]) == (
        "127.0.0.1",
        "5432",
        "postgres",
        "",
    )


def test_database_url_is_accepted_and_wins_over_db_variables():
    config = load({"DATABASE_URL": "postgres://u:p%40ss@pg:5433/appsup", "DB_DIALECT": "sqlite"})
    database = config.database
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PASSWORD"], database["HOST"], int(database["PORT"])) == (
        "appsup",
        "u",
        "p@ss",
        "pg",
        5433,
    )


def test_database_url_for_sqlite():
    assert load({"DATABASE_URL": "sqlite:////tmp/appsup.sqlite3"}).database["NAME"] == "/tmp/appsup.sqlite3"


def test_lists_and_token_are_read():
    config = load(
        {
            "ALLOWED_HOSTS": "a.example,b.example",
            "CSRF_TRUSTED_ORIGINS": "https://a.example",
            "SUPERVISOR_API_TOKEN": "t0ken-0123456789abcdef0123456789",
            "APP_HOSTED_APPS": "django.contrib.sites",
            "DEBUG": "true",
        }
    )
    assert config.allowed_hosts == ["a.example", "b.example"]
    assert config.csrf_trusted_origins == ["https://a.example"]
    assert config.api_token == "t0ken-0123456789abcdef0123456789"
    assert config.hosted_apps == ["django.contrib.sites"]
    assert config.debug is True


@pytest.mark.parametrize("base", [{}, SUPERVISOR], ids=["single", "supervisor"])
@pytest.mark.parametrize("token", ["a", "0123456789abcdef0123456789abcde"], ids=["one-character", "31-characters"])
def test_a_short_api_token_refuses_to_start(base, token):
    problems, message = problems_of({**base, "SUPERVISOR_API_TOKEN": token})
    assert problems == [
        f"SUPERVISOR_API_TOKEN is too short ({len(token)} characters): use at least 32 random characters, e.g. the "
        "output of `openssl rand -hex 32`, or leave it unset to turn bearer-token access off (staff sessions still work)"
    ]


def test_an_unset_api_token_turns_bearer_token_access_off_and_starts():
    assert load(SUPERVISOR).api_token == ""
    assert load({**SUPERVISOR, "SUPERVISOR_API_TOKEN": ""}).api_token == ""


def test_hosted_apps_are_listed_in_order_without_blanks_or_spaces():
    config = load({"APP_HOSTED_APPS": "django.contrib.sites, django.contrib.sitemaps,"})
    assert config.hosted_apps == ["django.contrib.sites", "django.contrib.sitemaps"]


@pytest.mark.parametrize(
    "value, entry, reason",
    [
        ("no.such.app", "no.such.app", "not an importable module"),  # its parent package is missing
        ("django.contrib.nosuchapp", "django.contrib.nosuchapp", "not an importable module"),
        ("django.contrib.sites,blog-app", "blog-app", "not an importable module"),
        (".sites", ".sites", "not an importable module"),
        ("django.contrib.admin", "django.contrib.admin", "always installed"),
        ("django.contrib.sessions", "django.contrib.sessions", "always installed"),
        ("workers", "workers", "always installed"),
        ("django.contrib.sites,django.contrib.sites", "django.contrib.sites", "twice"),
        ("django.contrib.gis.admin", "django.contrib.gis.admin", "label 'admin' is already taken"),
    ],
)
def test_a_hosted_app_that_django_could_not_install_is_refused_naming_it(value, entry, reason):
    problems, _ = problems_of({"APP_HOSTED_APPS": value})
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"APP_HOSTED_APPS lists {entry!r}")
    assert reason in problems[0]


def _manage(*args, **environ):
    # Only what the test sets: the suite may run with DB_* or APP_* of its own (CI's PostgreSQL run).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL") and not k.startswith(("DB_", "APP_", "ENVIRONMENT_"))
    }
    env.update(environ)
    return subprocess.run(
        [sys.executable, str(Path(BASE_DIR) / "manage.py"), *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_reports_a_bad_configuration_without_a_traceback(tmp_path):
    result = _manage("check", APP_MODE="bogus", APP_STORAGE_DIR=str(tmp_path))
    assert result.returncode == 2, result
    assert "APP_MODE='bogus' is not a role" in result.stderr
    assert "App Supervisor cannot start" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("value", ["no.such.app", "django.contrib.admin"])
def test_manage_py_reports_a_bad_hosted_app_without_a_traceback(tmp_path, value):
    result = _manage("check", APP_HOSTED_APPS=value, APP_STORAGE_DIR=str(tmp_path))
    assert result.returncode == 2, result
    assert f"APP_HOSTED_APPS lists {value!r}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_manage_py_check_passes_with_a_valid_worker_configuration(tmp_path):
    result = _manage("check", APP_STORAGE_DIR=str(tmp_path), DB_DIALECT="sqlite", **WORKER)
    assert result.returncode == 0, result.stderr


def test_a_bad_supervisor_redis_url_is_reported_once():
    with pytest.raises(ConfigError) as raised:
        load({"APP_SUPERVISOR_REDIS_URL": "http://redis:6379"})
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("APP_SUPERVISOR_REDIS_URL=")


@pytest.mark.parametrize("base, missing", [(SUPERVISOR, "APP_SUPERVISOR_KEY"), (WORKER, "APP_ENVIRONMENT_KEY"),
                                           (WORKER, "APP_SUPERVISOR_PUBLIC_KEYS")])
def test_a_supervisor_or_worker_without_its_keys_is_refused_naming_them(base, missing):
    environ = {k: v for k, v in base.items() if k != missing}
    problems, _ = problems_of(environ)
    assert len(problems) == 1 and problems[0].startswith(f"{missing} is required with APP_MODE={base['APP_MODE']}")


@pytest.mark.parametrize("name", ["APP_SUPERVISOR_KEY", "APP_ENVIRONMENT_KEY", "APP_SUPERVISOR_PUBLIC_KEYS"])
def test_a_key_that_is_not_an_ed25519_key_is_refused_naming_it(name):
    base = SUPERVISOR if name == "APP_SUPERVISOR_KEY" else WORKER
    problems, _ = problems_of(dict(base, **{name: "not-a-key"}))
    assert len(problems) == 1 and name in problems[0] and "Ed25519" in problems[0]


def test_a_worker_holding_the_supervisors_private_key_is_refused():
    problems, _ = problems_of(dict(WORKER, APP_SUPERVISOR_KEY=SUPERVISOR_KEY))
    assert len(problems) == 1 and "never give it to a worker" in problems[0]


def test_workers_accept_two_supervisor_public_keys_during_a_rotation_and_no_more():
    from exchange import keys

    two = f"{supervisor_public_key()},{keys.generate()[1]}"
    assert len(load(dict(WORKER, APP_SUPERVISOR_PUBLIC_KEYS=two)).supervisor_public_keys) == 2
    problems, _ = problems_of(dict(WORKER, APP_SUPERVISOR_PUBLIC_KEYS=f"{two},{keys.generate()[1]}"))
    assert "at most 2" in problems[0]


def test_the_shared_secret_is_optional_and_only_signs_alert_webhooks():
    assert load(SUPERVISOR).shared_secret == ""
    problems, _ = problems_of(dict(SUPERVISOR, APP_SHARED_SECRET="short"))
    assert problems[0].startswith("APP_SHARED_SECRET is too short (5 characters)")


def test_trust_on_first_use_is_off_unless_turned_on():
    assert load(SUPERVISOR).trust_on_first_use is False
    assert load(dict(SUPERVISOR, APP_TRUST_ON_FIRST_USE="true")).trust_on_first_use is True
    problems, _ = problems_of(dict(SUPERVISOR, APP_TRUST_ON_FIRST_USE="maybe"))
    assert problems[0].startswith("APP_TRUST_ON_FIRST_USE='maybe' is not a boolean")


def test_a_single_instance_needs_no_keys():
    assert load({}).supervisor_key == "" and load({}).environment_key == ""


def test_the_web_entry_point_without_the_supervisor_key_exits_2_naming_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "DB_", "ENVIRONMENT_"))}
    env.update(APP_MODE="supervisor", APP_STORAGE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", "import supervisor_project.asgi"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "APP_SUPERVISOR_KEY is required with APP_MODE=supervisor" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_proxy_may_connect_anywhere_and_forward_any_body_unless_told_otherwise():
    config = load(SUPERVISOR)
    assert (config.proxy_allowed_networks, config.proxy_max_body) == (None, None)


def test_app_proxy_allowed_networks_is_a_list_of_cidrs():
    import ipaddress

    config = load(dict(SUPERVISOR, APP_PROXY_ALLOWED_NETWORKS=" 10.0.0.0/8, 127.0.0.0/8,fd00::/8,192.168.1.7,"))
    assert config.proxy_allowed_networks == tuple(
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "127.0.0.0/8", "fd00::/8", "192.168.1.7/32"))


@pytest.mark.parametrize("value, wrong", [("10.0.0.0/33", "10.0.0.0/33"), ("10.0.0.0/8,worker-a", "worker-a"),
                                          ("10.0.0.0/8;127.0.0.0/8", "10.0.0.0/8;127.0.0.0/8")])
def test_a_bad_cidr_in_app_proxy_allowed_networks_is_refused_naming_it(value, wrong):
    problems, _ = problems_of(dict(SUPERVISOR, APP_PROXY_ALLOWED_NETWORKS=value))
    assert problems == [f"APP_PROXY_ALLOWED_NETWORKS lists {wrong!r}, which is not a network in CIDR notation; "
                        "e.g. APP_PROXY_ALLOWED_NETWORKS=10.0.0.0/8,127.0.0.0/8"]


def test_app_proxy_allowed_networks_naming_no_network_is_refused():
    problems, _ = problems_of(dict(SUPERVISOR, APP_PROXY_ALLOWED_NETWORKS=" , "))
    assert len(problems) == 1 and problems[0].startswith("APP_PROXY_ALLOWED_NETWORKS=',' names no network")


@pytest.mark.parametrize("value, size", [("1048576", 1048576), ("100M", 100 * 1024**2), ("100 MB", 100 * 1024**2),
                                         ("512k", 512 * 1024), ("2GiB", 2 * 1024**3), ("1T", 1024**4)])
def test_app_proxy_max_body_is_bytes_or_a_size_with_a_unit(value, size):
    assert load(dict(SUPERVISOR, APP_PROXY_MAX_BODY=value)).proxy_max_body == size


@pytest.mark.parametrize("value", ["0", "-1", "100X", "1.5M", "lots"])
def test_a_bad_app_proxy_max_body_is_refused_naming_it(value):
    problems, _ = problems_of(dict(SUPERVISOR, APP_PROXY_MAX_BODY=value))
    assert len(problems) == 1 and problems[0].startswith(f"APP_PROXY_MAX_BODY={value!r} is not a size above 0")


def test_request_heads_are_bounded_by_default_in_every_role():
    for environ in ({}, SUPERVISOR, WORKER):
        config = load(environ)
        assert config.max_header_bytes == 32 * 1024
        assert config.head_timeout == 20  # well under a minute: a slow client holds a connection no longer


@pytest.mark.parametrize("value, size", [("8192", 8192), ("64K", 65536), ("1M", 1024 * 1024)])
def test_app_max_header_bytes_is_bytes_or_a_size_with_a_unit(value, size):
    assert load(dict(WORKER, APP_MAX_HEADER_BYTES=value, APP_HEAD_TIMEOUT="7.5")).max_header_bytes == size


@pytest.mark.parametrize("variable, value, message", [
    ("APP_MAX_HEADER_BYTES", "100", "is not a size from 4K to 1M"),
    ("APP_MAX_HEADER_BYTES", "2M", "is not a size from 4K to 1M"),
    ("APP_MAX_HEADER_BYTES", "lots", "is not a size from 4K to 1M"),
    ("APP_HEAD_TIMEOUT", "0", "must be a positive number of seconds above 0"),
    ("APP_HEAD_TIMEOUT", "soon", "is not a positive number of seconds"),
])
def test_a_bad_request_head_bound_is_refused_naming_it(variable, value, message):
    problems, _ = problems_of(dict(SUPERVISOR, **{variable: value}))
    assert len(problems) == 1 and problems[0].startswith(f"{variable}={value!r} {message}")


@pytest.mark.parametrize("value, grace", [(None, 120.0), ("0", 0.0), ("300", 300.0), ("1.5", 1.5)])
def test_app_alert_stop_grace_is_seconds_and_two_minutes_by_default(value, grace):
    environ = SUPERVISOR if value is None else dict(SUPERVISOR, APP_ALERT_STOP_GRACE=value)
    assert load(environ).alert_stop_grace == grace


def test_app_alert_after_is_seconds_and_none_by_default():
    assert load(SUPERVISOR).alert_after == 0.0
    assert load(dict(SUPERVISOR, APP_ALERT_AFTER="90")).alert_after == 90.0
    problems, _ = problems_of(dict(SUPERVISOR, APP_ALERT_AFTER="later"))
    assert len(problems) == 1 and problems[0].startswith("APP_ALERT_AFTER='later'")


def test_flapping_is_four_changes_in_ten_minutes_by_default_and_zero_turns_it_off():
    assert (load(SUPERVISOR).alert_flap_count, load(SUPERVISOR).alert_flap_window) == (4, 600.0)
    loaded = load(dict(SUPERVISOR, APP_ALERT_FLAP_COUNT="0", APP_ALERT_FLAP_WINDOW="120"))
    assert (loaded.alert_flap_count, loaded.alert_flap_window) == (0, 120.0)


@pytest.mark.parametrize("var, value", [("APP_ALERT_FLAP_COUNT", "1"), ("APP_ALERT_FLAP_COUNT", "-3"),
                                        ("APP_ALERT_FLAP_COUNT", "many"), ("APP_ALERT_FLAP_WINDOW", "0")])
def test_a_bad_flapping_setting_is_refused_naming_it(var, value):
    problems, _ = problems_of(dict(SUPERVISOR, **{var: value}))
    assert len(problems) == 1 and problems[0].startswith(f"{var}={value!r}")


@pytest.mark.parametrize("value", ["-5", "soon"])
def test_a_bad_alert_stop_grace_is_refused_naming_it(value):
    problems, _ = problems_of(dict(SUPERVISOR, APP_ALERT_STOP_GRACE=value))
    assert len(problems) == 1 and problems[0].startswith(f"APP_ALERT_STOP_GRACE={value!r}")


def test_tz_sets_the_time_zone_pages_show_and_utc_by_default():
    assert load(SUPERVISOR).time_zone == "UTC"
    assert load(dict(SUPERVISOR, TZ="Asia/Shanghai")).time_zone == "Asia/Shanghai"  # as the reference sets it
    assert load(dict(WORKER, TZ=":Europe/Paris")).time_zone == "Europe/Paris"  # glibc's form


def test_an_unknown_tz_is_refused_naming_it():
    problems, _ = problems_of(dict(SUPERVISOR, TZ="Mars/Olympus_Mons"))
    assert len(problems) == 1 and problems[0].startswith("TZ='Mars/Olympus_Mons' is not a time zone")


def test_app_alert_webhooks_is_a_list_of_http_urls_and_none_by_default():
    assert load(SUPERVISOR).alert_webhooks == ()
    config = load(dict(SUPERVISOR, APP_ALERT_WEBHOOKS=" https://hooks.example.com/a, ,http://alerts:8080/in,"))
    assert config.alert_webhooks == ("https://hooks.example.com/a", "http://alerts:8080/in")


@pytest.mark.parametrize("value, wrong, reason", [
    ("ftp://hooks.example.com/a", "ftp://hooks.example.com/a", "is not an http(s) URL"),
    ("https://ok.example.com,hooks.example.com/a", "hooks.example.com/a", "is not an http(s) URL"),
    ("http://:80/x", "http://:80/x", "is not an http(s) URL"),
    ("http://a.example.com,http://a.example.com", "http://a.example.com", "twice"),
])
def test_a_bad_or_repeated_url_in_app_alert_webhooks_is_refused_naming_it(value, wrong, reason):
    problems, _ = problems_of(dict(SUPERVISOR, APP_ALERT_WEBHOOKS=value))
    assert len(problems) == 1 and problems[0].startswith(f"APP_ALERT_WEBHOOKS lists {wrong!r}")
    assert reason in problems[0]


def test_manage_py_reports_a_bad_alert_webhook_without_a_traceback(tmp_path):
    result = _manage("check", APP_ALERT_WEBHOOKS="hooks.example.com", APP_STORAGE_DIR=str(tmp_path), **SUPERVISOR)
    assert result.returncode == 2, result
    assert "APP_ALERT_WEBHOOKS lists 'hooks.example.com', which is not an http(s) URL" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_email_url_gives_the_alerts_mail_settings():
    config = load({**SUPERVISOR, "EMAIL_URL": "smtp+tls://alerts:pw@mail.example.com:587",
                   "DEFAULT_FROM_EMAIL": "appsup@example.com"})
    assert config.email["EMAIL_HOST"] == "mail.example.com" and config.email["EMAIL_PORT"] == 587
    assert config.email["EMAIL_USE_TLS"] is True and config.email["EMAIL_HOST_USER"] == "alerts"
    assert config.default_from_email == "appsup@example.com"
    assert load(SUPERVISOR).email == {}  # Django's defaults


def test_an_email_url_that_is_not_one_is_refused_naming_it():
    with pytest.raises(ConfigError, match="EMAIL_URL is not an e-mail URL"):
        load({**SUPERVISOR, "EMAIL_URL": "carrier-pigeon://loft"})


# -- single instance (APP_MODE unset) ------------------------------------------------------------------------------


def test_a_single_instance_is_its_own_environment_local_with_local_adapters():
    config = load({})
    assert (config.environment_name, config.discovery_adapter, config.process_adapter) == ("local", "local", "local")
    assert config.supervisor_redis_url == "" and config.shared_secret == ""


def test_remote_discovery_without_a_mode_is_refused_naming_the_variable():
    problems, _ = problems_of({"APP_DISCOVERY_ADAPTER": "remote"})
    assert len(problems) == 1
    assert problems[0].startswith("APP_DISCOVERY_ADAPTER=remote contradicts APP_MODE=(unset)")
    assert "own database" in problems[0] and "use APP_DISCOVERY_ADAPTER=local" in problems[0]


@pytest.mark.parametrize("base", [SUPERVISOR, WORKER], ids=["supervisor", "worker"])
def test_local_discovery_with_a_mode_is_refused_naming_the_variable(base):
    problems, _ = problems_of(dict(base, APP_DISCOVERY_ADAPTER="local"))
    assert len(problems) == 1
    assert problems[0].startswith(f"APP_DISCOVERY_ADAPTER=local contradicts APP_MODE={base['APP_MODE']}")
    assert "use APP_DISCOVERY_ADAPTER=remote" in problems[0]


def test_remote_process_adapter_without_a_mode_is_refused():
    problems, _ = problems_of({"APP_PROCESS_ADAPTER": "remote"})
    assert problems == ["APP_PROCESS_ADAPTER=remote contradicts APP_MODE=(unset): this process runs applications "
                        "itself, so use APP_PROCESS_ADAPTER=local"]


@pytest.mark.parametrize("variable", ["APP_SUPERVISOR_REDIS_URL", "APP_COMMAND_REDIS_URL"])
def test_a_redis_url_without_a_mode_is_refused_as_a_forgotten_mode(variable):
    problems, _ = problems_of({variable: "redis://redis:6379/0"})
    assert problems == [f"{variable} is set but APP_MODE is unset: a single instance uses no Redis; set "
                        f"APP_MODE=supervisor (or worker) to use it, or unset {variable}"]


def test_an_environment_name_other_than_local_without_a_mode_is_refused():
    problems, _ = problems_of({"ENVIRONMENT_NAME": "env_a"})
    assert len(problems) == 1 and problems[0].startswith("ENVIRONMENT_NAME='env_a' is for workers")
    assert load({"ENVIRONMENT_NAME": "local"}).environment_name == "local"


def test_a_mistyped_mode_is_reported_alone_not_with_single_instance_refusals():
    problems, _ = problems_of({"APP_MODE": "supervsior", "APP_SUPERVISOR_REDIS_URL": "redis://redis:6379/0"})
    assert len(problems) == 1 and problems[0].startswith("APP_MODE='supervsior' is not a role")


def test_a_sqlite_database_url_locks_as_the_db_variables_do():
    config = load({"DATABASE_URL": "sqlite:////data/by-url.sqlite3"})
    assert config.database["NAME"] == "/data/by-url.sqlite3"
    assert config.database["OPTIONS"] == {"transaction_mode": "IMMEDIATE", "timeout": 20}


def test_an_application_gets_half_the_threads_unless_told_otherwise():
    assert load(dict(WORKER, APP_WEB_THREADS="4")).app_concurrency == 2
    assert load(dict(WORKER, APP_WEB_THREADS="1")).app_concurrency == 1
    shared = load(dict(WORKER, APP_WEB_THREADS="4", APP_APP_CONCURRENCY="4", APP_APP_QUEUE="0",
                              APP_APP_QUEUE_WAIT="0.5", APP_APP_TIMEOUT="0"))
    assert (shared.app_concurrency, shared.app_queue, shared.app_queue_wait, shared.app_timeout) == (4, 0, 0.5, 0)


def test_a_concurrency_above_the_threads_says_so():
    problems, _ = problems_of(dict(WORKER, APP_WEB_THREADS="4", APP_APP_CONCURRENCY="5"))
    assert "APP_APP_CONCURRENCY='5'" in problems[0] and "at most APP_WEB_THREADS" in problems[0]


def test_fleet_upgrades_default_to_two_at_a_time_per_environment_each_after_a_backup_and_no_automatic_upgrade():
    config = load(SUPERVISOR)
    assert (config.upgrade_concurrency, config.auto_upgrade, config.upgrade_backup) == (2, False, True)
    config = load(dict(SUPERVISOR, APP_UPGRADE_CONCURRENCY="8", APP_AUTO_UPGRADE="true", APP_UPGRADE_BACKUP="false"))
    assert (config.upgrade_concurrency, config.auto_upgrade, config.upgrade_backup) == (8, True, False)
def test_backups_are_stored_under_the_storage_directory_unless_told_s3_and_scheduled_only_when_asked(tmp_path):
    config = load(dict(SUPERVISOR, APP_STORAGE_DIR=str(tmp_path)))
    assert config.backup_schedule == "" and config.backup_keep == 7
    assert config.backup_storage["OPTIONS"]["location"] == str(tmp_path.resolve() / "backups")
    s3 = load(dict(SUPERVISOR, APP_BACKUP_STORAGE="s3", APP_BACKUP_S3_BUCKET="bk", APP_BACKUP_SCHEDULE="0  3 * * 1",
                   APP_BACKUP_S3_ENDPOINT_URL="http://127.0.0.1:9000", APP_BACKUP_KEEP="30"))
    assert s3.backup_storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert s3.backup_storage["OPTIONS"]["bucket_name"] == "bk"
    assert s3.backup_storage["OPTIONS"]["endpoint_url"] == "http://127.0.0.1:9000"
    assert (s3.backup_schedule, s3.backup_keep) == ("0 3 * * 1", 30)
    assert load(dict(SUPERVISOR, APP_BACKUP_SCHEDULE="off")).backup_schedule == ""
