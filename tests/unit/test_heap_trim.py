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


ARENAS = """
import ctypes, sys, threading
from ceemsnet.serving import exporter
tuned = exporter.tune_malloc() if sys.argv[1] == "tune" else None
held, ready, go = [], threading.Barrier(5), threading.Event()

def work():
    held.append([ctypes.create_string_buffer(4096) for _ in range(64)])  # malloc'd in this thread
    ready.wait()
    go.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
ready.wait()  # all four allocated and still hold their blocks
ctypes.CDLL(None).malloc_stats()  # glibc: one 'Arena N:' block per arena, on stderr
go.set()
for t in threads:
    t.join()
print(tuned)
"""


def _arenas(mode, env=None):
    import os
    import subprocess
    import sys
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    e.update(env or {})
    out = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, timeout=60, env=e)
    assert out.returncode == 0, out.stderr
    return out.stderr.count("Arena "), out.stdout.strip()


def test_tuned_malloc_keeps_threads_in_one_arena():
    """What tune_malloc() is for (serve calls it first): threads that allocate (an HTTP connection's)
    share glibc's one arena, where untuned each gets its own, which keeps what a scrape freed."""
    import pytest
    untuned, _ = _arenas("plain")
    if untuned == 0:
        pytest.skip("no glibc malloc_stats() here")
    tuned, ok = _arenas("tune")
    assert ok == "True" and tuned == 1 and untuned > 1
    # the site's own setting wins: the environment's MALLOC_ARENA_MAX is left as it is
    n, ok = _arenas("tune", {"MALLOC_ARENA_MAX": "4"})
    assert ok == "False" and n > 1
