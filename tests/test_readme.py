"""The README's tour and Python example run as written, from a folder that holds only the
repository's examples (as a clean clone does), and produce what they say they do."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def tour_commands() -> list[str]:
    block = README.split("<!-- tour -->", 1)[1].split("```", 2)[1]
    cmds = [line[2:].split("  #")[0].strip() for line in block.splitlines() if line.startswith("$ ")]
    assert cmds and all(c.startswith("pde2net ") for c in cmds)
    return cmds


def python_block() -> str:
    section = README.split("## In Python", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder with the repository's examples, where the tour's relative paths resolve."""
    where = tmp_path_factory.mktemp("clone")
    (where / "examples").symlink_to(ROOT / "examples")
    return where


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pde2net.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_tour_command_runs_as_written(clone):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("imageio")
    for cmd in tour_commands():
        r = run(shlex.split(cmd)[1:], clone)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, cmd
    # what the commands say they write is there, and it is what it claims to be
    out = np.load(clone / "out.npy")
    assert out.shape == (256,) and np.isfinite(out).all()
    for name in ("pm.py", "out.png", "evolution.png", "evolution.gif", "pm.onnx", "pm.pt", "net.png"):
        assert (clone / name).stat().st_size > 0, name
    compile(open(clone / "pm.py").read(), "pm.py", "exec")


def test_tour_json_and_param_agree_with_the_documented_bound(clone):
    r = run(["check", "examples/perona_malik.pde", "--json"], clone)
    report = json.loads(r.stdout)
    assert report["tau_max"] == 0.5 and report["verdict"] == "stable"  # 2 / (L ||D||^2), L = 1, 4
    # the README lists the keys: every key of the report is named there, and no other
    listed = README.split("`check --json` has the same keys", 1)[1].split("`", 2)[1].split()
    assert sorted(listed) == sorted(report)


def test_python_example_runs(clone):
    code = python_block()
    r = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                           [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_set_up_commands_name_existing_files():
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        cmd = README.split(marker, 1)[1].split("```", 2)[1].strip()
        for path in re.findall(r"examples/[\w./]+", cmd):
            assert (ROOT / path).exists(), path
