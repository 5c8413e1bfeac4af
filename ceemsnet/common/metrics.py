"""Metric families as plain data, with two renderings.

Collectors return Family objects: cheap to build for hundreds of thousands
of series. `to_prometheus()` turns one into prometheus_client's metric
family (registry API); `TextRenderer` writes the Prometheus text format
0.0.4, or OpenMetrics 1.0 (what Prometheus asks for first), directly,
caching each label value's escaped form, which is what keeps a scrape of
10,000 cgroups fast (see bench/scrape.py and docs/performance.md).
tests/unit/test_metrics.py checks both renderings agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Family:
    name: str                  # counters: without the _total suffix
    help: str
    kind: str                  # "counter" | "gauge"
    labels: tuple[str, ...]
    rows: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    # the rows already rendered as text-format sample lines (render_rows, UTF-8), when
    # a collector keeps them across scrapes (collectors/counters.py); None: render the rows
    data = None

    def add(self, values: tuple[str, ...], value) -> None:
        self.rows.append((values, value))

    def to_prometheus(self):
        # not at the top: only OpenMetrics asks for it (text does without), and it costs 30-40 ms, 3 MiB at start
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        m = cls(self.name, self.help, labels=list(self.labels))
        for values, v in self.rows:
            m.add_metric(list(values), v)
        return m


def merge_families(families: list[Family]) -> list[Family]:
    """One family per name: collectors may each add rows to a shared family
    (ceemsnet_map_update_failures, ...), which must be exposed once."""
    seen: dict[str, Family] = {}
    out: list[Family] = []
    for f in families:
        first = seen.get(f.name)
        if first is None:
            seen[f.name] = f
            out.append(f)
        else:
            if first.labels != f.labels or first.kind != f.kind:
                raise ValueError(f"family {f.name} defined twice with different labels or type")
            if first.rows is f.rows:
                continue
            first.rows = first.rows + f.rows
    return out


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_help_om(v: str) -> str:
    """OpenMetrics escapes a double quote in HELP too (prometheus_client's openmetrics exposition does)."""
    return _escape_label(v)


OPENMETRICS_EOF = b"# EOF\n"


def _fmt(v) -> str:
    if isinstance(v, int):
        return str(v)
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def sample_name(f: Family) -> str:
    return f.name + "_total" if f.kind == "counter" else f.name


def render_rows(sample: str, names: tuple[str, ...], rows, label=_escape_label) -> str:
    """The text-format lines of `rows` of one family (label: the escaping, or a cache of it)."""
    if not names:
        return "".join(f"{sample} {_fmt(v)}\n" for _, v in rows)
    out = []
    app = out.append
    for values, v in rows:
        inner = ",".join(f'{n}="{label(x)}"' for n, x in zip(names, values))
        app(f"{sample}{{{inner}}} {_fmt(v)}\n")
    return "".join(out)


class PrerenderedFamily(Family):
    """A family whose sample lines come already rendered, in parts (each a bytes of
    whole lines, joined when rendered: `data`), or from a function making those
    parts each time they are read (the text is then made only while a scrape is
    sent, and kept by no one); its rows are built only when something reads them
    (OpenMetrics, the store, --unit)."""

    def __init__(self, name: str, help: str, kind: str, labels: tuple[str, ...], parts: list[bytes], rows_of):
        self.name, self.help, self.kind, self.labels = name, help, kind, labels
        self._parts = parts
        self._rows_of = rows_of
        self._rows = None

    @property
    def data(self):
        parts = self.parts
        return None if parts is None else b"".join(parts)

    @property
    def parts(self):
        """The sample lines in their parts, not joined (None: render the rows)."""
        p = self._parts
        return p() if callable(p) else p

    @property
    def maker(self):
        """The function making the parts when they are read, if they are made so (else None)."""
        return self._parts if callable(self._parts) else None

    @property
    def rows(self):
        if self._rows is None:
            self._rows = self._rows_of()
        return self._rows

    @rows.setter
    def rows(self, value):  # rows changed (merge_families): the text no longer says them
        self._rows = value
        self._parts = None


class TextRenderer:
    """Prometheus text format 0.0.4; escaped label values are cached across scrapes.

    Two generations: a render keeps the values it uses, and values no render
    used since the one before are dropped, so the cache holds the live label
    set and does not grow with every cgroup that ever came and went.
    """

    def __init__(self):
        self._cache: dict[str, str] = {}
        self._prev: dict[str, str] = {}

    def _label(self, v: str) -> str:
        e = self._cache.get(v)
        if e is None:
            e = self._prev.get(v)
            if e is None:
                e = _escape_label(v)
            self._cache[v] = e
        return e

    def render_parts(self, families: list[Family], openmetrics: bool = False) -> list[bytes]:
        """The exposition as a list of UTF-8 parts (a WSGI body): families with
        their sample lines already rendered are not copied, nor joined."""
        out: list[bytes] = []
        for it in self.render_items(families, openmetrics):
            if callable(it):
                out += it()
            else:
                out.append(it)
        return out

    def render_items(self, families: list[Family], openmetrics: bool = False) -> list:
        """The exposition in order, each item UTF-8 bytes or a function making a family's sample
        lines (a list of bytes) when called (PrerenderedFamily.maker): a body sent as it is made.

        openmetrics: OpenMetrics 1.0 instead of the text format 0.0.4. The sample
        lines are the same (counters' samples end in _total, values are integers or
        Python floats, label values escaped alike); HELP and TYPE name the family
        (no _total), HELP escapes double quotes too, and the text ends in # EOF."""
        self._prev, self._cache = self._cache, {}
        out: list = []
        app = out.append
        for f in families:
            sample = sample_name(f)
            if openmetrics:
                app(f"# HELP {f.name} {_escape_help_om(f.help)}\n# TYPE {f.name} {f.kind}\n".encode())
            else:
                app(f"# HELP {sample} {_escape_help(f.help)}\n# TYPE {sample} {f.kind}\n".encode())
            maker = getattr(f, "maker", None)
            parts = None if maker is not None else getattr(f, "parts", None)
            if maker is not None:
                app(maker)
            elif parts is not None:
                out += parts
            else:
                data = f.data
                app(data if data is not None else render_rows(sample, f.labels, f.rows, self._label).encode())
        if openmetrics:
            app(OPENMETRICS_EOF)
        return out
