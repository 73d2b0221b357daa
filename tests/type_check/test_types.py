"""mypy must reject exactly the lines marked ``# E:`` in tasks_typed.py, and nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_mypy_rejects_wrong_calls_and_accepts_right_ones() -> None:
    target = HERE / "tasks_typed.py"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = {
        int(m.group(1))
        for m in re.finditer(rf"{re.escape(target.name)}:(\d+): error:", proc.stdout)
    }
    expected = {
        number
        for number, line in enumerate(target.read_text().splitlines(), start=1)
        if "# E:" in line
    }
    assert expected, "the fixture lost its marked lines"
    assert errors == expected, proc.stdout
