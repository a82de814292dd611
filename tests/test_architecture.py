"""The layers of docs/architecture.md hold: import-linter checks the contracts in pyproject.toml (one direction of
dependencies, exhaustive over the package's modules; no cycles), and the same kind of contract is shown to catch an
upward import made inside a function and an unplaced module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


def lint(config: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    assert LINT is not None, "import-linter is not installed (it is in the dev extra)"
    return subprocess.run([LINT, "--config", str(config), "--no-cache", "--no-logo"], capture_output=True, text=True, env=env,
                          cwd=config.parent, timeout=300)


def test_the_package_keeps_its_layers_and_has_no_cycles():
    out = lint(ROOT / "pyproject.toml", ROOT / "src")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


def test_the_architecture_document_names_every_layer_of_the_contract():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for layer in layers:
        for module in layer.replace("|", " ").replace(":", " ").split():
            assert f"`{module}`" in doc, f"docs/architecture.md does not explain layer module {module!r}"


@pytest.mark.parametrize("case", ["upward_in_function", "unplaced_module", "cycle"])
def test_a_broken_layering_is_caught(tmp_path, case):
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "high.py").write_text("from toy.low import X\n")
    layers = '["high", "low"]'
    if case == "upward_in_function":
        (pkg / "low.py").write_text("def f():\n    from toy.high import X\n    return X\n")
    elif case == "unplaced_module":
        (pkg / "extra.py").write_text("")
    else:
        sub = pkg / "high"
        (pkg / "high.py").unlink()
        sub.mkdir()
        (sub / "__init__.py").write_text("")
        (sub / "a.py").write_text("from toy.high import b\n")
        (sub / "b.py").write_text("from toy.high import a\n")
    config = tmp_path / "pyproject.toml"
    config.write_text(textwrap.dedent(f"""
        [tool.importlinter]
        root_package = "toy"

        [[tool.importlinter.contracts]]
        id = "layers"
        name = "layers"
        type = "layers"
        containers = ["toy"]
        exhaustive = true
        layers = {layers}

        [[tool.importlinter.contracts]]
        id = "acyclic"
        name = "acyclic"
        type = "acyclic_siblings"
        ancestors = ["toy"]
    """))
    out = lint(config, tmp_path)
    assert out.returncode != 0, out.stdout
    assert "BROKEN" in out.stdout or "broken" in out.stdout.lower() or "Missing layer" in out.stdout, out.stdout


def test_no_module_imports_back_into_a_module_that_imports_it():
    """No cycle of any shape, including a submodule importing its own package's ``__init__`` that imports it (which the
    sibling contract does not see): for every import a -> b, no chain leads from b back to a."""
    import grimp

    graph = grimp.build_graph("unlearnkit")
    cycles = sorted((a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                    if graph.chain_exists(importer=b, imported=a))
    assert not cycles, f"import cycles through: {cycles[:5]}"
