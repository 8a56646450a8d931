"""The GPU run's scripts parse here: a GPU box is lent for minutes, and a script that fails to start wastes them."""
import subprocess

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
