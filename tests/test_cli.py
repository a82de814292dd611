import subprocess
import sys
from pathlib import Path

import yaml

from unlearnkit.cli import main
from tests.runs.test_runner import SPEC


def write(tmp_path, spec, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_validate_good_and_bad(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, SPEC))]) == 0
    assert "OK" in capsys.readouterr().out
    bad = {**SPEC, "metods": SPEC["methods"]}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    assert "Unknown key 'metods'" in capsys.readouterr().err
    bad = {**SPEC, "methods": [{"name": "salunn"}]}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    assert "Did you mean: salun" in capsys.readouterr().err
    bad = {**SPEC, "methods": [{"name": "finetune", "params": {"lrr": 0.1}}]}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    assert "Unknown parameter 'lrr' for method 'finetune'. Did you mean: lr" in capsys.readouterr().err
    bad = {**SPEC, "metrics": ["accuracy", "relearnn"]}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    assert "Did you mean: relearn" in capsys.readouterr().err
    bad = {**SPEC, "forget": [{"kind": "classes", "classes": [12]}]}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    assert "out of range [0, 10)" in capsys.readouterr().err
    bad = {**SPEC, "train": {**SPEC["train"], "epochs": "many"}}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    assert main(["validate", str(tmp_path / "broken.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_ls(capsys):
    for what in ("methods", "metrics", "tasks", "models"):
        assert main(["ls", what]) == 0
    out = capsys.readouterr().out
    for name in ("salun", "ssd", "relearn", "noise_floor", "fashion_mnist", "digits", "mlp"):
        assert name in out


def test_run_ls_runs_and_report(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["run", str(write(tmp_path, SPEC)), "--store", str(store), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "forget set: random 10%" in out and "HTML report:" in out
    assert main(["ls", "runs", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    run_id = next(line.split()[0] for line in listing.splitlines() if " ssd " in line)
    report = tmp_path / "r.html"
    assert main(["report", run_id, "--store", str(store), "-o", str(report)]) == 0
    html = report.read_text()
    assert "Relearning attack" in html and "data:image/png;base64" in html and "ssd" in html
    assert main(["report", "nosuchid", "--store", str(store), "-o", str(report)]) == 2  # both lookups named
    assert "matches no single experiment" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path):
    """The installed `unlearnkit` command works and reports errors with exit code 2."""
    exe = Path(sys.executable).parent / "unlearnkit"
    res = subprocess.run([str(exe), "ls", "methods"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "salun" in res.stdout
    res = subprocess.run([str(exe), "run", str(tmp_path / "missing.yaml")], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_validate_rejects_fewer_than_two_retrained_seeds(tmp_path, capsys):
    bad = {**SPEC, "references": {"retrain_seeds": 1}}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    err = capsys.readouterr().err
    assert "references.retrain_seeds must be a whole number >= 2, got 1 (3 recommended" in err and "one retrained model has no spread" in err
    # 0 is for data without a retrained oracle (the knowledge source) only: refused once the data is loaded
    assert main(["validate", str(write(tmp_path, {**SPEC, "references": {"retrain_seeds": 0}}))]) == 2
    assert "retrain_seeds: 0 for data" in capsys.readouterr().err
