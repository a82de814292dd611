"""The comparator in a real browser: Debian's Chromium driven by Playwright against the app served by uvicorn on a free
loopback port, over the small digits store of conftest.py. Every number the page shows is checked against the API's
answer for the same request (TPR/FPR at the slider's threshold, per-class accuracy, confidence changes, CKA points), the
table's sort and filter against an independent sort and filter of /api/runs, and the brushed examples against the
points drawn inside the brushed rectangle. A screenshot of each step is saved under the test's tmp dir."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                                 "(`make data` installs it); the browser tests need it")
# flags for a headless Chromium on a machine without network or GPU (root: no sandbox); nothing is downloaded
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
READY = "window.uk && window.uk.ready"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(store_dir) -> Iterator[str]:
    """The app over the digits store, served by uvicorn in a thread on a free 127.0.0.1 port."""
    import uvicorn

    from unlearnkit.web import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(base_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 800})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def api(base_url: str, path: str) -> dict:
    r = httpx.get(base_url + path, timeout=60)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def shows(text: str, value: float | None, digits: int = 3) -> bool:
    """``text`` is ``value`` as the page formats it (``toFixed(digits)``; "—" for None)."""
    if value is None:
        return text.strip() == "—"
    return abs(float(text) - value) <= 0.5 * 10 ** -digits + 1e-9


def column(page, name: str) -> list[str]:
    """The cells of column ``name`` of the screening table, top to bottom."""
    heads = page.locator("#runs thead th").all_inner_texts()
    i = next(k for k, h in enumerate(heads) if h.split(" ▲")[0].split(" ▼")[0] == name)
    return page.locator(f"#runs tbody tr td:nth-child({i + 1})").all_inner_texts()


def test_the_comparator_in_chromium(page, base_url, ids, tmp_path):
    shot = lambda step: page.screenshot(path=str(tmp_path / f"{step}.png"), full_page=True)  # noqa: E731
    runs = api(base_url, "/api/runs")["runs"]

    # ---------------------------------------------------------------- screening: every run, sort, filter
    page.goto(base_url + "/")
    page.wait_for_function(READY)
    assert page.inner_text("#count") == f"{len(runs)} of {len(runs)} runs"
    by_id = {r["run_id"]: r for r in runs}
    rows = page.locator("#runs tbody tr")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.run)")) == sorted(by_id)
    passes = dict(zip(rows.evaluate_all("rs => rs.map(r => r.dataset.run)"), column(page, "passes × retrain"), strict=True))
    for rid, text in passes.items():
        assert shows(text, by_id[rid]["cost_ratio"]["example_passes"]), (rid, text)
    verdicts = dict(zip(rows.evaluate_all("rs => rs.map(r => r.dataset.run)"), column(page, "verdict"), strict=True))
    assert all(verdicts[rid] == (by_id[rid]["verdict"] or "—") for rid in by_id)
    shot("01-screening")

    page.click('#runs th[data-col="method"]')
    assert column(page, "method") == sorted(r["method"] for r in runs)
    page.click('#runs th[data-col="method"]')
    assert column(page, "method") == sorted((r["method"] for r in runs), reverse=True)
    page.click('#runs th[data-col="passes × retrain"]')  # numbers ascending, runs without a ratio last
    values = [r["cost_ratio"]["example_passes"] for r in runs]
    want = sorted(v for v in values if v is not None) + [None] * values.count(None)
    assert all(shows(t, v) for t, v in zip(column(page, "passes × retrain"), want, strict=True))
    shot("02-sorted")

    page.fill("#filter", "grad_ascent")
    assert column(page, "method") == ["grad_ascent"] and page.inner_text("#count") == f"1 of {len(runs)} runs"
    page.fill("#filter", "comparator-other")
    assert set(column(page, "experiment")) == {"comparator-other"}
    assert len(column(page, "experiment")) == sum(r["experiment"] == "comparator-other" for r in runs)
    shot("03-filtered")
    page.fill("#filter", "comparator-tiny")

    # ---------------------------------------------------------------- A and B, then the class view
    a, b = ids["grad_ascent"], ids["retrain"]
    page.click(f'#runs tr[data-run="{a}"] button[data-pick="a"]')
    page.wait_for_function(READY)
    page.click(f'#runs tr[data-run="{b}"] button[data-pick="b"]')
    page.wait_for_function(READY)
    assert page.locator(f'#runs tr[data-run="{a}"]').get_attribute("class") == "sel-a"
    assert page.locator(f'#runs tr[data-run="{b}"]').get_attribute("class") == "sel-b"
    assert "A: grad_ascent" in page.inner_text("#selection") and "B: retrain" in page.inner_text("#selection")
    assert page.evaluate("window.uk.view") == "classes" and page.locator("#view .err").count() == 0
    ca, cb = api(base_url, f"/api/runs/{a}/classes"), api(base_url, f"/api/runs/{b}/classes")
    class_rows = page.locator("#class-table tr[data-class]")
    shown_classes = [int(c) for c in class_rows.evaluate_all("rs => rs.map(r => r.dataset.class)")]
    assert shown_classes == [c for c in range(ca["n_classes"]) if ca["splits"]["forget"]["class_counts"][c] > 0]
    for c, ta, tb in zip(shown_classes, page.locator("#class-table td.acc-a").all_inner_texts(),
                         page.locator("#class-table td.acc-b").all_inner_texts(), strict=True):
        assert shows(ta, ca["splits"]["forget"]["class_accuracy"][c]) and shows(tb, cb["splits"]["forget"]["class_accuracy"][c])
    assert page.locator("#view svg").count() == 4  # the bars, A's and B's matrices and their difference
    shot("04-classes")

    # ---------------------------------------------------------------- instance view: brushing links the two panels
    page.click('#tabs button[data-view="instances"]')
    page.wait_for_function(READY)
    changes = api(base_url, f"/api/runs/{a}/confidence-changes?against={b}&split=forget&k=20")["rows"]
    cells = page.locator("#changes tr td").all_inner_texts()
    table = [cells[i:i + 7] for i in range(0, len(cells), 7)]
    assert len(table) == len(changes) > 0
    for shown_row, row in zip(table, changes, strict=True):
        assert int(shown_row[0]) == row["id"] and shows(shown_row[6], row["delta"]) and shows(shown_row[4], row["p_true"])
    scatters = page.locator("#scatters svg")
    assert scatters.count() == 2
    n_points = len(api(base_url, f"/api/runs/{a}/embedding")["points"])
    assert scatters.nth(0).locator("circle").count() == n_points
    scatters.nth(0).scroll_into_view_if_needed()
    box = scatters.nth(0).bounding_box()
    x0, y0, x1, y1 = box["x"] + 0.25 * box["width"], box["y"] + 0.2 * box["height"], box["x"] + 0.75 * box["width"], box["y"] + 0.75 * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    circles = "cs => cs.map(c => [c.dataset.key, +c.getAttribute('cx'), +c.getAttribute('cy'), c.getAttribute('fill-opacity')])"
    drawn_a = page.locator("#scatters svg").nth(0).locator("circle").evaluate_all(circles)
    drawn_b = page.locator("#scatters svg").nth(1).locator("circle").evaluate_all(circles)
    rx0, ry0, rx1, ry1 = x0 - box["x"], y0 - box["y"], x1 - box["x"], y1 - box["y"]
    inside = {k for k, cx, cy, _ in drawn_a if rx0 <= cx <= rx1 and ry0 <= cy <= ry1}
    lit_a = {k for k, *_, op in drawn_a if op == "0.85"}
    lit_b = {k for k, *_, op in drawn_b if op == "0.85"}
    assert 0 < len(inside) < n_points, (box, len(inside))
    assert lit_a == inside, (box, len(lit_a), len(inside), len(lit_a - inside), len(inside - lit_a))
    assert lit_b == inside  # the same examples light up in B's panel
    assert page.inner_text("#brush-info") == f"{len(inside)} examples selected"
    shot("05-instances-brushed")

    # ---------------------------------------------------------------- layer view: the CKA points where the API puts them
    page.click('#tabs button[data-view="layers"]')
    page.wait_for_function(READY)
    ka = api(base_url, f"/api/runs/{a}/cka")
    charts = page.locator("#view svg")
    assert charts.count() == 3
    for k, split in enumerate(("forget", "retain", "test")):
        values = [x["original"] for x in ka["splits"][split] if x["original"] is not None]
        cy = charts.nth(k).locator("circle").evaluate_all("cs => cs.map(c => +c.getAttribute('cy'))")[:len(values)]
        # lines(): 260 px high, 24 px top and 42 px bottom margins, y from 0 (bottom) to 1 (top)
        assert cy == pytest.approx([218 - 194 * v for v in values], abs=0.01), split
    assert "A vs original" in charts.nth(0).inner_html() and "B vs retrain" in charts.nth(0).inner_html()
    shot("06-layers")

    # ---------------------------------------------------------------- attack view: moving the threshold
    page.click('#tabs button[data-view="attack"]')
    page.wait_for_function(READY)
    first = api(base_url, f"/api/runs/{a}/attack")
    assert shows(page.inner_text(".attack-a .tpr"), first["tpr"]) and shows(page.inner_text(".attack-a .fpr"), first["fpr"])
    assert shows(page.inner_text("#threshold-value"), first["threshold"], 4)
    shot("07-attack")
    page.focus("#threshold")
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(READY)
    value = page.input_value("#threshold")
    assert float(value) > first["threshold"]
    for run, tag in ((a, "a"), (b, "b")):
        at = api(base_url, f"/api/runs/{run}/attack?threshold={value}")
        assert shows(page.inner_text(f".attack-{tag} .tpr"), at["tpr"]) and shows(page.inner_text(f".attack-{tag} .fpr"), at["fpr"]), tag
    assert shows(page.inner_text("#threshold-value"), float(value), 4)
    shot("08-attack-moved")

    # ---------------------------------------------------------------- evidence, and a link that names the pair and view
    page.click('#tabs button[data-view="evidence"]')
    page.wait_for_function(READY)
    labels = page.locator("#view h3 .v").all_inner_texts()
    assert labels == [api(base_url, f"/api/runs/{r}/evidence")["label"] for r in (a, b)]
    shot("09-evidence")
    page.goto(f"{base_url}/#a={b}&b={a}&view=attack")
    page.reload()
    page.wait_for_function(READY)
    assert page.evaluate("window.uk.view") == "attack" and shows(page.inner_text(".attack-a .tpr"), api(base_url, f"/api/runs/{b}/attack")["tpr"])
    shot("10-link")
    assert all((tmp_path / f).stat().st_size > 10_000 for f in [p.name for p in tmp_path.glob("*.png")])
    assert len(list(tmp_path.glob("*.png"))) == 10
    print(json.dumps(page.evaluate("window.uk.timings")))
