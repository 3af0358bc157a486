"""Metrics on the gateway's ``/metrics``, exported as ``synapsor_wasm_<name>`` with the label
``plugin`` added. Define them in ``__init__`` (every instance does; the gateway hands back the
same metric). Errors (a bad name or labels, a clash) raise ``ValueError``."""

from typing import List, Sequence

from componentize_py_types import Err
from wit_world.imports import host, types


def _define(name: str, help: str, kind: types.MetricKind, labels: Sequence[str],
            buckets: Sequence[float] = ()) -> int:
    try:
        return host.define_metric(types.Metric(name, help, kind, list(labels), list(buckets)))
    except Err as e:
        raise ValueError(f"metric {name}: {e.value}") from None


class Counter:
    """A counter (exported with ``_total``); ``labels`` are its label names."""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.id = _define(name, help, types.MetricKind.COUNTER, labels)

    def inc(self, labels: List[str] = (), by: float = 1.0) -> None:
        """Adds ``by`` (0 or more) to the series with these label values."""
        host.metric_add(self.id, list(labels), by)


class Gauge:
    """A gauge: it goes up and down."""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.id = _define(name, help, types.MetricKind.GAUGE, labels)

    def set(self, labels: List[str], value: float) -> None:
        """Sets the series with these label values."""
        host.metric_set(self.id, list(labels), value)

    def add(self, labels: List[str], value: float) -> None:
        """Adds ``value`` (negative to subtract)."""
        host.metric_add(self.id, list(labels), value)


class Histogram:
    """A histogram; ``buckets`` are increasing bounds (at most 32; empty for 0.005 to 10)."""

    def __init__(self, name: str, help: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = ()):
        self.id = _define(name, help, types.MetricKind.HISTOGRAM, labels, buckets)

    def observe(self, labels: List[str], value: float) -> None:
        """Records ``value`` in the series with these label values."""
        host.metric_observe(self.id, list(labels), value)
