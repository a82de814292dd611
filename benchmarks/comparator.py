"""Comparator speed: the per-run analysis cache, the page in Chromium, and the API under concurrent load.

On a store with the Fashion-MNIST demo's runs (the bundled ``quickstart`` experiment, 60,000 training examples) it
measures (1) the time to build each run's analysis cache (the task rebuilt once per task, then each run), (2) in Debian's
Chromium driven by Playwright, the time to the first view of a pair A/B and to each view switch once the cache exists
(goal: under 1 s), and (3) API latency percentiles under N concurrent clients for S seconds (httpx, async, against
uvicorn in its own process on 127.0.0.1), a mix of the requests the page makes. Printed and written to
docs/results/comparator.md:

    nice -n 10 python benchmarks/comparator.py --store DIR       # a store holding the demo's runs (copied, never changed)
    nice -n 10 python benchmarks/comparator.py                   # builds the demo's store first (about 10 min more)
    python benchmarks/comparator.py --screenshots docs/images    # also the README's screenshots of each view, 1280×800

Longer than 60 lines: the three timed phases, the screenshots and the table of their results belong together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from unlearnkit.io import Transcript, write_generated  # noqa: E402
from unlearnkit.runs import Store  # noqa: E402
from unlearnkit.runs.runner import cpu_model  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWS = ("classes", "instances", "layers", "attack", "evidence")
READY = "window.uk && window.uk.ready"
GOAL = 1.0  # seconds to a view once the cache exists


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation between closest ranks, numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def build_store(root: Path, experiment: str, say: Transcript) -> float:
    """Run the bundled experiment ``experiment`` (default: the demo's) into a new store at ``root``; its wall seconds."""
    from unlearnkit.experiment import bundled_experiment, load_experiment
    from unlearnkit.runs.runner import run_experiment

    path = Path(experiment) if Path(experiment).is_file() else bundled_experiment(experiment)
    t0 = time.perf_counter()
    run_experiment(load_experiment(path), Store(root), device="cpu", progress=False, log=lambda m: None)
    seconds = time.perf_counter() - t0
    say.say(f"built the store: experiment {path.name} in {seconds / 60:.1f} min")
    return seconds


def cache_build(root: Path, say: Transcript) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run's analysis computed from scratch (the cache removed first): per task the rebuild of the task and its
    references, then each run. Returns the screening rows and the runs it could not analyse (with why)."""
    from unlearnkit.web import analysis as an
    from unlearnkit.web.app import Comparator

    comp = Comparator(root)
    rows = comp.screening()["runs"]
    contexts: dict[str, Any] = {}
    skipped: list[str] = []
    say.say("")
    say.say("## 1. Per-run analysis cache (computed once per run, then read from the store)")
    say.say("")
    say.say("| task | method | seconds |")
    say.say("|---|---|---|")
    times = []
    for row in rows:
        an.remove_cached(comp.store, row["run_id"])
        record = comp.store.load_run(row["run_id"])
        key = row["task_fingerprint"]
        try:
            if key not in contexts:
                t0 = time.perf_counter()
                contexts[key] = an.task_context(comp.store, record)
                say.say(f"| {row['task']} | *(task and references rebuilt, once per task)* | {time.perf_counter() - t0:.2f} |")
            t0 = time.perf_counter()
            an.analysis(comp.store, row["run_id"], context=lambda r, k=key: contexts[k])
        except an.AnalysisUnavailable as exc:
            skipped.append(f"{row['run_id']} ({row['method']}): {exc}")
            continue
        seconds = time.perf_counter() - t0
        times.append(seconds)
        say.say(f"| {row['task']} | {row['method']} | {seconds:.2f} |")
        t0 = time.perf_counter()
        an.analysis(comp.store, row["run_id"])  # read back from the cache
        row["read_seconds"] = time.perf_counter() - t0
    reads = [r["read_seconds"] for r in rows if "read_seconds" in r]
    say.say("")
    say.say(f"{len(times)} runs analysed: median {statistics.median(times):.2f} s, max {max(times):.2f} s per run (after the "
            f"task rebuild); reading one back from the cache: median {statistics.median(reads) * 1000:.0f} ms.")
    for s in skipped:
        say.say(f"Not analysed: {s}")
    return rows, skipped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    """uvicorn with the app over ``root`` in its own process on a free loopback port; waits until it answers."""
    import httpx

    port = free_port()
    code = ("import uvicorn; from unlearnkit.web import create_app; "
            f"uvicorn.run(create_app({str(root)!r}), host='127.0.0.1', port={port}, log_level='warning')")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/api/runs", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the comparator did not start on {url}")
        time.sleep(0.2)


def pick_pair(rows: list[dict[str, Any]], task: str, a: str, b: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def find(method: str) -> dict[str, Any]:
        for r in rows:
            if r["method"] == method and (r["task"] == task or task not in {x["task"] for x in rows}):
                return r
        raise SystemExit(f"no {method} run of task {task!r} in the store (tasks: {sorted({str(x['task']) for x in rows})})")

    return find(a), find(b)


def brush(page) -> None:
    svg = page.locator("#scatters svg").nth(0)
    svg.scroll_into_view_if_needed()
    box = svg.bounding_box()
    page.mouse.move(box["x"] + 0.15 * box["width"], box["y"] + 0.15 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.6 * box["height"], steps=5)
    page.mouse.up()


def browser_timings(url: str, a: str, b: str, repeats: int, shots: Path | None, say: Transcript) -> dict[str, list[float]]:
    """Seconds from the action to the page's readiness flag: the first view of the pair (a fresh page load of a link
    naming A, B and the view), each view switch (a click on its tab), and a move of the attack threshold."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"first view (page load)": [], **{f"switch to {v}": [] for v in VIEWS}, "threshold move": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(120_000)
        for _ in range(repeats):
            page.goto("about:blank")
            t0 = time.perf_counter()
            page.goto(f"{url}/#a={a}&b={b}&view=classes")
            page.wait_for_function(READY)
            out["first view (page load)"].append(time.perf_counter() - t0)
            for view in (*VIEWS[1:], VIEWS[0]):
                t0 = time.perf_counter()
                page.click(f'#tabs button[data-view="{view}"]')
                page.wait_for_function(READY)
                out[f"switch to {view}"].append(time.perf_counter() - t0)
                if page.locator("#view .err").count():
                    raise SystemExit(f"the {view} view shows an error: {page.inner_text('#view .err')}")
            page.click('#tabs button[data-view="attack"]')
            page.wait_for_function(READY)
            page.focus("#threshold")
            t0 = time.perf_counter()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(READY)
            out["threshold move"].append(time.perf_counter() - t0)
        if shots is not None:
            screenshots(page, url, a, b, shots, say)
        browser.close()
    return out


def screenshots(page, url: str, a: str, b: str, folder: Path, say: Transcript) -> None:
    """A 1280×800 screenshot of the screening table and of each view (the view scrolled to the top of the window)."""
    folder.mkdir(parents=True, exist_ok=True)
    page.goto("about:blank")
    page.goto(f"{url}/#a={a}&b={b}&view=classes")
    page.wait_for_function(READY)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(folder / "comparator_screening.png"))
    for view in VIEWS:
        page.click(f'#tabs button[data-view="{view}"]')
        page.wait_for_function(READY)
        if view == "classes":  # the retain split: where an over-forgetting method falls below the retrain band
            page.select_option("#split", "retain")
            page.wait_for_function(READY)
        if view == "instances":
            page.select_option("#split", "forget")
            page.wait_for_function(READY)
            brush(page)
        page.evaluate("document.getElementById('selection').scrollIntoView()")
        page.screenshot(path=str(folder / f"comparator_{view}.png"))
    say.say(f"screenshots (1280×800): {', '.join(sorted(p.name for p in folder.glob('comparator_*.png')))} in {folder}")


async def _load(url: str, paths: list[str], clients: int, seconds: float) -> list[tuple[str, float, str]]:
    """(path, seconds, outcome) of every request: the status code, or the exception's name when none came back."""
    import httpx

    results: list[tuple[str, float, str]] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def one(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                path = paths[i % len(paths)]
                i += 1
                t0 = time.perf_counter()
                try:
                    outcome = str((await client.get(path)).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                results.append((path, time.perf_counter() - t0, outcome))

        await asyncio.gather(*(one(k) for k in range(clients)))
    return results


def load_test(url: str, a: str, b: str, clients: int, seconds: float, say: Transcript) -> None:
    kinds = {"runs": "/api/runs", "compare": f"/api/compare?a={a}&b={b}", "classes": f"/api/runs/{a}/classes",
             "embedding": f"/api/runs/{a}/embedding", "confidence-changes": f"/api/runs/{a}/confidence-changes?against={b}&k=20",
             "cka": f"/api/runs/{a}/cka", "attack": f"/api/runs/{a}/attack", "attack?threshold": f"/api/runs/{b}/attack?threshold=0.5",
             "evidence": f"/api/runs/{a}/evidence", "static": "/static/app.js"}
    alone = asyncio.run(_load(url, list(kinds.values()), 1, min(seconds, 10.0)))  # service time: one client, no queue
    t0 = time.perf_counter()
    results = asyncio.run(_load(url, list(kinds.values()), clients, seconds))
    wall = time.perf_counter() - t0
    name = {v: k for k, v in kinds.items()}
    say.say("")
    say.say(f"## 3. API latency under load: {clients} concurrent clients for {seconds:g} s")
    say.say("")
    say.say(f"Each client loops over the {len(kinds)} requests below (the ones the page makes for A = run {a[:8]}, B = {b[:8]}); "
            "the load generator (httpx, asyncio) and the server (uvicorn, one process) share this machine.")
    say.say("")
    say.say("| request | n | p50 ms | p95 ms | p99 ms | errors | one client alone: p50 ms |")
    say.say("|---|---|---|---|---|---|---|")
    for path, label in [(p, name[p]) for p in kinds.values()] + [(None, "**all**")]:
        sel = [r for r in results if path is None or r[0] == path]
        lat = [r[1] * 1000 for r in sel]
        errors = sum(r[2] != "200" for r in sel)
        base = [r[1] * 1000 for r in alone if path is None or r[0] == path]
        say.say(f"| {label} | {len(sel)} | {percentile(lat, 50):.0f} | {percentile(lat, 95):.0f} | {percentile(lat, 99):.0f} | {errors} | "
                f"{percentile(base, 50):.0f} |")
    failed = Counter(r[2] for r in results if r[2] != "200")
    say.say("")
    say.say(f"{len(results)} requests in {wall:.1f} s: {len(results) / wall:.0f} requests/s ({clients} clients) against "
            f"{len(alone) / min(seconds, 10.0):.0f} requests/s from one client alone; p50 under load "
            f"{percentile([r[1] for r in results], 50) / max(percentile([r[1] for r in alone], 50), 1e-9):.1f} × the p50 of one client. "
            f"Errors (a status other than 200, or no answer): {sum(failed.values())}"
            + (f" ({', '.join(f'{k}: {v}' for k, v in failed.most_common())})." if failed else "."))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=None, help="a store with the demo's runs (copied to a temporary folder; never changed)")
    p.add_argument("--experiment", default="quickstart", help="without --store: the bundled experiment (or a YAML file) to build")
    p.add_argument("--task", default="class 0", help="the task of the pair A/B timed in the browser and under load")
    p.add_argument("--a", default="salun", help="method of run A")
    p.add_argument("--b", default="retrain", help="method of run B")
    p.add_argument("--repeats", type=int, default=5, help="page loads (each followed by every view switch) timed")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--screenshots", default=None, help="folder for a 1280×800 screenshot of each view (README: docs/images)")
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "comparator.md"))
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        p.error(f"{CHROMIUM} is missing: install Debian's chromium (`make data` does)")
    if args.repeats < 1 or args.clients < 1 or args.seconds <= 0:
        p.error("--repeats and --clients must be at least 1, --seconds positive")
    say = Transcript()
    work = Path(tempfile.mkdtemp(prefix="comparator-bench-"))
    proc = None
    try:
        root = work / "store"
        if args.store:
            if not (Path(args.store) / "index.sqlite").is_file():
                p.error(f"--store {args.store} is not a run store (no index.sqlite)")
            shutil.copytree(args.store, root, ignore=shutil.ignore_patterns("analysis"))
            source = f"the store at --store (copied; {sum(1 for _ in Store(root, tidy=False).runs())} runs)"
        else:
            build_store(root, args.experiment, say)
            source = f"a store built from the bundled experiment {args.experiment}"
        import torch

        say.say(f"comparator benchmark on {source}; machine: {cpu_model()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
                f"{subprocess.run([CHROMIUM, '--version'], capture_output=True, text=True).stdout.strip()}; "
                f"load average at start {os.getloadavg()[0]:.1f}")
        rows, _ = cache_build(root, say)
        ra, rb = pick_pair(rows, args.task, args.a, args.b)
        proc, url = serve(root)
        timings = browser_timings(url, ra["run_id"], rb["run_id"], args.repeats,
                                  Path(args.screenshots) if args.screenshots else None, say)
        say.say("")
        say.say(f"## 2. In Chromium (headless, 1280×800), the cache built: A = {ra['method']} ({ra['run_id'][:8]}), "
                f"B = {rb['method']} ({rb['run_id'][:8]}), {ra['task']}")
        say.say("")
        say.say(f"Seconds from the action (page load of a link naming A, B and the view; a click on a tab; one step of the "
                f"threshold slider) until the view is drawn, {args.repeats} times each. Goal: under {GOAL:.0f} s.")
        say.say("")
        say.say("| action | median s | max s | under the goal |")
        say.say("|---|---|---|---|")
        for action, values in timings.items():
            say.say(f"| {action} | {statistics.median(values):.3f} | {max(values):.3f} | "
                    f"{sum(v < GOAL for v in values)} of {len(values)} |")
        worst = max(max(v) for v in timings.values())
        say.say("")
        say.say(f"Slowest action {worst:.3f} s: {worst / GOAL:.2f} × the {GOAL:.0f} s goal.")
        load_test(url, ra["run_id"], rb["run_id"], args.clients, args.seconds, say)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    write_generated(args.output, "Comparator: cache, views in the browser, API under load", "comparator.py",
                    argv if argv is not None else sys.argv[1:], say.lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
