"""Code style is checked, not hoped for: ruff (pyflakes, pycodestyle, import order) passes on the whole project."""
import subprocess
import sys

from conftest import REPO


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "repro", "tests", "notebooks", "scripts"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
