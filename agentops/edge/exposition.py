"""The Prometheus text format (0.0.4), one metric family at a time.

Rules:
- Every family has HELP and TYPE lines, even with no samples (so a scraper sees it exists).
- Label values are escaped (backslash, quote, newline); numbers are written as integers when
  they are whole.
- A histogram is written the Prometheus way: cumulative `_bucket{le=...}` (ending `+Inf`),
  then `_sum` and `_count`, per label set.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentops.bus.metrics import BUCKETS, Histogram

Sample = tuple[dict[str, str], float]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _bound(value: float) -> str:
    return repr(float(value))


class Exposition:
    """Builds the text format one metric family at a time."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def _head(self, name: str, kind: str, help_text: str) -> None:
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def _sample(self, name: str, labels: dict[str, str], value: float) -> None:
        rendered = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self._lines.append(
            f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"
        )

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self._head(name, kind, help_text)
        for labels, value in samples:
            self._sample(name, labels, value)

    def histogram(
        self, name: str, help_text: str, series: Iterable[tuple[dict[str, str], Histogram]]
    ) -> None:
        self._head(name, "histogram", help_text)
        for labels, hist in series:
            running = 0
            for bound, count in zip((*BUCKETS, None), hist.counts, strict=True):
                running += count
                le = "+Inf" if bound is None else _bound(bound)
                self._sample(f"{name}_bucket", {**labels, "le": le}, running)
            self._sample(f"{name}_sum", labels, round(hist.sum, 9))
            self._sample(f"{name}_count", labels, running)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
