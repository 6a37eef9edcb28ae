"""Parses an OpenMetrics 1.0 exposition from stdin with the official Prometheus Python
client's strict parser (prometheus_client.openmetrics.parser), which refuses a missing
`# EOF`, bad escaping, histogram buckets out of order or not ending in +Inf, a _count
that differs from the +Inf bucket, and exemplars where the format forbids them.

Prints one line per family (`family NAME TYPE SAMPLES`) and one per exemplar
(`exemplar SAMPLE LABELS TRACE_ID VALUE`), or fails with the parser's error."""

import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    print("family", family.name, family.type, len(family.samples))
    for sample in family.samples:
        if sample.exemplar is not None:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            print(
                "exemplar",
                sample.name,
                labels,
                sample.exemplar.labels.get("trace_id", ""),
                sample.exemplar.value,
            )
