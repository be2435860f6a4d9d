"""The body of a scrape of /metrics: prometheus-client's encoder for the registry's families, and gauges with a
series per environment written here directly.

prometheus-client's ``generate_latest`` costs about 10 µs a series (every label name validated and escaped, every
value through ``floatToGoString``), which at 10,000 environments was most of a scrape's half second. A family of
many series whose label names are ours and whose values are plain numbers needs none of that per series: ``Gauge``
writes the same text (Prometheus's text format and OpenMetrics agree on gauges) at a fraction of the cost.
"""

from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

# What ends an OpenMetrics exposition; nothing may follow it.
OPENMETRICS_EOF = b"# EOF\n"

# How a value is written, as prometheus-client writes it, for the values most series have.
_WRITTEN = {0: "0.0", 1: "1.0"}


def escape_label_value(value):
    """VALUE as a label value between double quotes (the text format's escaping)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def number(value):
    written = _WRITTEN.get(value)
    return written if written is not None and type(value) is int else floatToGoString(value)


class Gauge:
    """A gauge family with many series: NAME, DOCUMENTATION, LABELS (names, valid as they are), and ``add``
    (label values, value) for each series."""

    def __init__(self, name, documentation, labels):
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.lines = []
        # Each series' line starts with this, then its first label's value.
        self._start = f'{name}{{{self.labels[0]}="'
        self._more = [f'",{label}="' for label in self.labels[1:]]

    def add(self, values, value):
        line = [self._start, escape_label_value(values[0])]
        for separator, v in zip(self._more, values[1:]):
            line += [separator, escape_label_value(v)]
        line += ['"} ', number(value), "\n"]
        self.lines.append("".join(line))

    def text(self):
        documentation = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {documentation}\n# TYPE {self.name} gauge\n" + "".join(self.lines)


def scrape(registry, families, accept):
    """(body, content type) answering a scrape whose Accept header is ACCEPT: REGISTRY's families encoded by
    prometheus-client in the format the scraper prefers, then FAMILIES (Gauge)."""
    encode, content_type = choose_encoder(accept)
    body = encode(registry)
    extra = "".join(family.text() for family in families).encode()
    if body.endswith(OPENMETRICS_EOF):
        return body[: -len(OPENMETRICS_EOF)] + extra + OPENMETRICS_EOF, content_type
    return body + extra, content_type
