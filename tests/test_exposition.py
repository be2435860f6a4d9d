"""monitoring.exposition: gauges with a series per environment, written without prometheus-client's encoder, must
read exactly as if it had written them."""

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from monitoring import exposition

SERIES = [
    (("env_a", "online"), 1),
    (("env_b", "offline"), 0),
    (('odd "quoted" \\ back\nslash', "degraded"), 1764410000.123456),
    (("env_c", "online"), 0.5),
    (("env_d", "online"), 1e-09),
]


class Registry:
    def __init__(self, *families):
        self.families = families

    def collect(self):
        return self.families


def both():
    ours = exposition.Gauge("appsup_test", "Help with a \\ backslash\nand a newline.", ["environment", "status"])
    theirs = GaugeMetricFamily("appsup_test", "Help with a \\ backslash\nand a newline.",
                               labels=["environment", "status"])
    for values, value in SERIES:
        ours.add(values, value)
        theirs.add_metric(list(values), value)
    return ours, theirs


def test_a_gauge_is_written_as_prometheus_client_writes_it():
    ours, theirs = both()
    assert ours.text().encode() == generate_latest(Registry(theirs))


def test_the_gauges_come_before_the_end_of_an_openmetrics_exposition():
    ours, theirs = both()
    body, content_type = exposition.scrape(CollectorRegistry(), [ours], "application/openmetrics-text")

    assert content_type.startswith("application/openmetrics-text")
    assert body == generate_openmetrics(Registry(theirs))
    (family,) = text_string_to_metric_families(body.decode())
    assert [s.labels["environment"] for s in family.samples][2] == 'odd "quoted" \\ back\nslash'
