"""The GPU run's scripts parse here: a GPU box is lent for minutes, and a script that fails to start wastes them."""
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.unit
SCRIPTS = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "fixtures").glob("*.py"))
SHELL = sorted((ROOT / "scripts").glob("*.sh")) + [ROOT / ".ci" / "run"]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_python_script_compiles(path):
    compile(path.read_text(), str(path), "exec")  # a SyntaxError fails here, as on the box's python3


@pytest.mark.parametrize("path", SHELL, ids=lambda p: p.name)
def test_shell_script_parses(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_python_scripts_were_found():
    assert len(SCRIPTS) >= 7 and len(SHELL) >= 3


def test_every_kernel_mutant_still_applies_once(monkeypatch):
    """scripts/kernel_mutants.py edits the kernels by text: an edit whose text a kernel change removed (or made
    ambiguous) would stop the sweep, so each must occur exactly once in today's kernel sources."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("kernel_mutants", ROOT / "scripts" / "kernel_mutants.py")
    mutants = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "kernel_mutants", mutants)  # its dataclass looks its module up there
    spec.loader.exec_module(mutants)
    assert len(mutants.MUTANTS) >= 19 and {m.file for m in mutants.MUTANTS} == set(mutants.SELECTIONS)
    for m in mutants.MUTANTS:
        source = (ROOT / mutants.KERNELS / m.file).read_text()
        assert source.count(m.old) == 1 and m.old != m.new, m.name
