"""Every version-2 example compiles to the verdict its file promises, and ``verify`` finds it
consistent: the dense frozen operator is symmetric, positive semidefinite and within the proven
bound, the network equals the dense float64 scheme, and no input grows beyond what is claimed."""
from __future__ import annotations

import pytest

import pde2net
from pde2net import verify

#: example -> (verdict, the theory sections its report must cite)
EXAMPLES = {
    "catte": ("stable", ("§1", "§10")),
    "eed": ("stable", ("§1", "§9")),
    "ced": ("stable", ("§1", "§9")),
    "tv_denoise": ("stable", ("§11",)),
    "color_pm": ("stable", ("§1", "§12")),
    "heat_3d": ("stable", ("§1", "§12")),
    "you_kaveh": ("stable", ("§1", "§12")),
    "per_axis": ("stable", ("§1", "§2")),
    # a nonlinear reaction: proven only for inputs in the invariant region [-1, 1]
    "allen_cahn": ("cannot prove", ("§11",)),
}


@pytest.mark.parametrize("stem", sorted(EXAMPLES))
def test_example_verdict_and_verify(stem):
    prog = pde2net.load(f"examples/{stem}.pde")
    assert prog.operator
    verdict, sections = EXAMPLES[stem]
    report = prog.stability
    assert report.verdict == verdict, report.reason
    for sec in sections:
        assert f"docs/theory.md {sec}" in report.statement
    r = verify.verify(prog, budget=0.2)
    assert r.consistent, r.failures
    assert r.reference["ok"] and r.reference["max_rel_diff"] <= 1e-10
    if verdict == "stable":
        assert r.norm["ok"] and r.norm["actual"] <= r.norm["bound"] * (1 + 1e-12)
        assert r.counterexample_growth is None
    else:
        assert report.extra["invariant_region_proven"] and report.extra["invariant_region"] == [-1.0, 1.0]


def test_an_operator_example_above_its_bound_is_caught_by_verify():
    """The checks are not vacuous: per-axis Perona-Malik at 1.1 x its bound is "not stable", and
    verify's battery finds a growing input (small amplitude, where g is near its supremum)."""
    text = open("examples/per_axis.pde").read().replace("tau = 0.2", "tau = 0.275")
    prog = pde2net.compile_text(text)
    assert prog.stability.verdict == "not stable"
    r = verify.verify(prog, budget=0.2)
    assert r.counterexample_growth is not None and r.counterexample_growth > 1 + 1e-6


def test_colour_png_and_volume_runs_keep_their_form(tmp_path):
    """An RGB PNG runs through a `channels 3` spec jointly and comes back as RGB at its bit depth,
    equal to the network's output rounded; a (D, H, W) volume comes back as (D, H, W)."""
    import numpy as np
    import png
    import torch

    from pde2net.cli import main

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
    src, out = tmp_path / "rgb.png", tmp_path / "out.png"
    with open(src, "wb") as f:
        png.Writer(10, 12, greyscale=False, bitdepth=8).write(f, img.reshape(12, -1).tolist())
    assert main(["run", "examples/color_pm.pde", "--input", str(src), "--output", str(out),
                 "--param", "lambda=20", "--dtype", "float64"]) == 0
    w, h, rows, info = png.Reader(filename=str(out)).read()
    got = np.array(list(rows)).reshape(h, w, 3)
    assert (w, h, info["bitdepth"], info["planes"]) == (10, 12, 8, 3)
    net = pde2net.load("examples/color_pm.pde", params={"lambda": 20}).module(dtype=torch.float64)
    want = net(torch.as_tensor(img.transpose(2, 0, 1).astype(np.float64))).numpy().transpose(1, 2, 0)
    assert np.array_equal(got, np.clip(np.rint(want), 0, 255))
    vol, vout = tmp_path / "vol.npy", tmp_path / "vout.npy"
    np.save(vol, rng.standard_normal((5, 6, 7)))
    assert main(["run", "examples/heat_3d.pde", "--input", str(vol), "--output", str(vout)]) == 0
    assert np.load(vout).shape == (5, 6, 7)
