"""benchmarks/attacks.py (slow, on a small Fashion-MNIST subset): the header gives the command as typed (pastable), the
table states ε-score's ceiling at its ensemble size (a second retrained ensemble against the first), and the HTML report
lands beside the table it belongs to, never on the committed docs/results/attacks_report.html."""

import re

import pytest

from tests.test_benchmarks import ROOT, load
from tests.test_fashion_e2e import have_fashion


@pytest.mark.slow
@pytest.mark.skipif(not have_fashion(), reason="Fashion-MNIST not installed (make data installs it)")
def test_small_attacks_run_states_the_epsilon_ceiling_and_keeps_its_report_beside_the_table(tmp_path, capsys):
    committed = ROOT / "docs" / "results" / "attacks_report.html"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    out = tmp_path / "small.md"
    code = load("attacks").main(["--train-subset", "1500", "--test-subset", "500", "--shadows", "4", "--ensemble", "4",
                                 "--methods", "retrain", "--refs-cache", str(tmp_path / "refs"), "--output", str(out)])
    capsys.readouterr()
    assert code == 0
    text = out.read_text()
    assert "`python benchmarks/attacks.py --train-subset 1500 --test-subset 500 --shadows 4 --ensemble 4 --methods retrain" in text
    assert "ensembles of 4" in text and (tmp_path / "small_report.html").exists()
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before
    ceilings = [float(v) for v in re.findall(r"ε-score's ceiling with N = 4: ([0-9.]+)", text)]
    assert len(ceilings) == 2 and all(0.0 <= c <= 1.0 for c in ceilings)  # one per forget set, a forgetting quality
    rows = [line for line in text.splitlines() if line.startswith("| retrain |")]
    assert len(rows) == 2
