"""Fuzzing the comparator's id and path parameters with hypothesis (``..``, absolute paths, %2f-encoded separators, NUL,
arbitrary text): never a 500, never a traceback, and, watched by an audit hook on every ``open``, no file outside the
store, the app's static folder and the Python installation is ever opened (a secret file beside the store included)."""

from __future__ import annotations

import mimetypes
import os
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from unlearnkit.web.app import STATIC  # noqa: E402

OPENED: list[str] = []
WATCH = {"on": False}


def _audit(event: str, args: tuple) -> None:
    if WATCH["on"] and event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; it records only while WATCH["on"]

NASTY = ["..", "../..", "../../etc/passwd", "/etc/passwd", "%2e%2e%2f", "..%2f..%2fsecret.txt", "%2F", "%252F", "\x00", "%00",
         "..\\..\\secret.txt", "C:\\Windows", "~", "secret.txt", "../secret.txt", "analysis", "runs", "index.sqlite", ".",
         "//", "%2e%2e", "..%00", "a/../../b"]
PIECES = st.one_of(st.sampled_from(NASTY), st.text(min_size=0, max_size=12))
IDS = st.lists(PIECES, min_size=1, max_size=4).map("".join)
TEMPLATES = ["/api/runs/{x}", "/api/runs/{x}/classes", "/api/runs/{x}/embedding", "/api/runs/{x}/cka", "/api/runs/{x}/attack",
             "/api/runs/{x}/evidence", "/api/runs/{ok}/confidence-changes?against={x}", "/api/compare?a={x}&b={ok}",
             "/api/runs/{ok}/attack?threshold={x}", "/api/runs/{ok}/attack?score={x}", "/api/runs/{ok}/embedding?projection={x}",
             "/api/runs/{x}/examples/forget/1.png", "/api/runs/{ok}/examples/{x}/1.png", "/api/runs/{ok}/examples/forget/{x}.png",
             "/api/runs/{ok}/examples/forget/{x}", "/static/{x}", "/{x}"]


@pytest.fixture(scope="module")
def watched(client, store_dir, ids):
    secret = store_dir.parent / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    for view in ("classes", "embedding"):  # the analyses exist first: fuzzing must not depend on computing them
        client.get(f"/api/runs/{ids['finetune']}/{view}")
    return secret


def allowed(path: str, store_dir: Path) -> bool:
    p = os.path.realpath(path)
    if path in mimetypes.knownfiles:  # the standard library's MIME table, read once to serve a static file's type
        return True
    roots = [store_dir, STATIC, Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.prefix)),
             Path(__file__).resolve().parents[2] / "src"] + [Path(p2) for p2 in sys.path if p2 and "site-packages" in p2]
    return any(p == os.path.realpath(r) or p.startswith(os.path.realpath(r) + os.sep) for r in roots) or p.startswith(("/proc/", "/dev/"))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=IDS, template=st.sampled_from(TEMPLATES), encode=st.booleans())
def test_fuzzed_ids_and_paths_never_500_nor_read_outside_the_store(client, store_dir, ids, watched, x, template, encode):
    # raw: separators and dots travel as they are (control characters cannot be sent raw: percent-encoded, as NUL is)
    raw = "".join(quote(c) if c.isascii() and not c.isprintable() else c for c in x)
    value = quote(x, safe="") if encode else raw.replace("?", "%3F").replace("#", "%23").replace("&", "%26")
    url = template.format(x=value, ok=ids["finetune"])
    OPENED.clear()
    WATCH["on"] = True
    try:
        r = client.get(url)
    finally:
        WATCH["on"] = False
    assert r.status_code in (200, 400, 404, 405, 422), (url, r.status_code, r.text[:300])
    assert "Traceback" not in r.text and "TOP-SECRET" not in r.text
    if r.status_code != 200:
        assert "error" in r.json()
    outside = [p for p in OPENED if not allowed(p, store_dir)]
    assert not outside, (url, outside)
    assert str(watched) not in map(os.path.realpath, OPENED)


def test_the_audit_hook_sees_opens(store_dir):
    """The watch works: a read of the secret file beside the store is recorded and counted as outside."""
    OPENED.clear()
    WATCH["on"] = True
    try:
        (store_dir.parent / "probe.txt").write_text("x")
    finally:
        WATCH["on"] = False
    assert any(not allowed(p, store_dir) for p in OPENED)
