"""A non-editable wheel ships the grammar and works from another folder."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr[-300:]}")
    return next(out.glob("pde2net-*.whl"))


def test_wheel_contains_the_grammar(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "pde2net/grammar/pde.lark" in names
    assert (ROOT / "grammar" / "pde.lark").read_bytes() == zipfile.ZipFile(wheel).read("pde2net/grammar/pde.lark")


def test_installed_copy_runs_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    spec = (ROOT / "examples" / "perona_malik.pde").read_text()
    code = ("import json, pde2net; prog = pde2net.compile_text(open('pm.pde').read(), 'pm.pde'); "
            "print(json.dumps([pde2net.__file__, prog.stability.tau_max]))")
    (tmp_path / "pm.pde").write_text(spec)
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    where, tau_max = json.loads(r.stdout)
    assert where.startswith(str(target)) and tau_max == 0.5
