"""The exporter hands a scrape's freed heap back (glibc malloc_trim) once the body is sent:
the WSGI body's close(), which the server calls after writing it."""

from ceemsnet.serving import exporter
from ceemsnet.common.metrics import Family


class OneFamily:
    name = "fake"

    def collect(self):
        f = Family("ceemsnet_fake_total_bytes", "a family", "counter", ("cgroup",))
        f.add(("/a",), 3)
        return [f]


def test_scrape_body_trims_the_heap_when_closed(monkeypatch):
    trims = []
    monkeypatch.setattr(exporter, "trim_heap", lambda: trims.append(1))
    coll = exporter.CeemsnetCollector([OneFamily()], [], {"version": "test"})
    app = exporter.make_app(lambda: None, coll)
    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_ACCEPT": "text/plain"}
    body = app(env, lambda status, headers: None)
    assert b'ceemsnet_fake_total_bytes_total{cgroup="/a"} 3\n' in b"".join(body)
    assert trims == []
    body.close()
    assert trims == [1]


def test_trim_is_callable_here():
    exporter.trim_heap()  # glibc here; a no-op where malloc_trim does not exist
