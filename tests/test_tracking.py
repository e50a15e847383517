"""Watching a run: ``Program.run`` callbacks, progress off a terminal, plots, movies, graph pictures.

References: the network applied in one call (``net(u0)``; the tracker must not change a bit), the
dense explicit scheme of tests/reference.py for early stops, the closed-form cycle time
``tau (n^2 + n) / 3``, and NumPy norms for the plotted series.
"""
from __future__ import annotations

import io

import networkx as nx
import numpy as np
import pytest
import torch

import pde2net
from pde2net import tracking
from pde2net.netgraph import architecture_graph, render_picture
from reference import dense_difference, explicit_dense, perona_malik

PM = """pde pm
param lambda = 0.2
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
scheme {scheme}
"""


def _signal(n=48, seed=1):
    rng = np.random.default_rng(seed)
    return torch.tensor(np.cumsum(rng.standard_normal((2, n)), axis=-1))


def test_run_with_callback_equals_one_call_bit_for_bit():
    prog = pde2net.compile_text(PM.format(scheme="explicit(tau = 0.25, steps = 23)"))
    net = prog.module(dtype=torch.float64)
    u0 = _signal()
    seen = []
    out = prog.run(u0, every=5, on_step=lambda k, t, u: seen.append((k, t)), net=net)
    assert torch.equal(out, net(u0))
    assert [k for k, _ in seen] == [0, 5, 10, 15, 20, 23]
    assert [t for _, t in seen] == [0.25 * k for k, _ in seen]


def test_callback_stops_early_at_the_dense_reference():
    prog = pde2net.compile_text(PM.format(scheme="explicit(tau = 0.25, steps = 100)"))
    u0 = _signal()
    out = prog.run(u0, every=3, on_step=lambda k, t, u: k >= 9, dtype=torch.float64)
    ref = explicit_dense(u0.numpy(), dense_difference([-1, 1], 0, u0.shape[-1], "neumann"),
                         perona_malik(0.2), 0.25, 9)
    assert np.max(np.abs(out.numpy() - ref)) <= 1e-12 * np.max(np.abs(ref))


@pytest.mark.parametrize("scheme,per_block", [
    ("fed(tau_max = 0.5, cycle_length = 6, cycles = 2)", 0.5 * 42 / 3),
    ("fsi(tau = 0.4, cycle_length = 3, cycles = 2)", 0.4 * 12 / 3),
    ("implicit(tau = 3, steps = 2)", 3.0),
])
def test_time_per_block_is_the_cycle_time(scheme, per_block):
    prog = pde2net.compile_text(PM.format(scheme=scheme))
    assert tracking.time_per_block(prog.arch) == pytest.approx(per_block, rel=1e-15)
    times = []
    prog.run(_signal(), on_step=lambda k, t, u: times.append(t), dtype=torch.float64)
    assert times == pytest.approx([k * per_block for k in range(3)], rel=1e-15)


def test_every_must_be_positive():
    prog = pde2net.compile_text(PM.format(scheme="explicit(tau = 0.25, steps = 2)"))
    with pytest.raises(ValueError, match="every"):
        prog.run(_signal(), every=0)


def test_progress_off_a_terminal_prints_lines_at_a_low_rate():
    quiet, chatty = io.StringIO(), io.StringIO()
    slow, fast = tracking.Progress(10, quiet, interval=3600), tracking.Progress(10, chatty, interval=0)
    for _ in range(10):
        slow.update(1)
        fast.update(1)
    assert quiet.getvalue() == ""
    lines = chatty.getvalue().splitlines()
    assert len(lines) == 9 and lines[0].startswith("progress: 1/10 steps (10%)")


def test_plot_2d_frames_difference_and_norms(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from pde2net.plot import plot_evolution

    rng = np.random.default_rng(0)
    states = [rng.random((20, 24)) * (1 - 0.1 * k) for k in range(7)]
    plot_evolution(str(tmp_path / "e.png"), [0.5 * k for k in range(7)], states, 2, "t", order=1)
    w, h = Image.open(tmp_path / "e.png").size
    assert w > 3 * h  # four frames, the difference image and the norm panel in one row


@pytest.mark.parametrize("ndim", [1, 2])
def test_movie_has_one_frame_per_state(tmp_path, ndim):
    imageio = pytest.importorskip("imageio.v2")
    from pde2net.plot import write_movie

    rng = np.random.default_rng(0)
    shape = (30,) if ndim == 1 else (16, 16)
    states = [rng.random(shape) for _ in range(5)]
    path = tmp_path / "m.gif"
    assert write_movie(str(path), list(range(5)), states, ndim) == 5
    frames = imageio.mimread(path)
    assert len(frames) == 5 and not np.array_equal(frames[0], frames[-1])


def test_movie_refuses_unknown_format(tmp_path):
    from pde2net.plot import write_movie

    with pytest.raises(pde2net.PdeError, match=r"\.gif or \.mp4"):
        write_movie(str(tmp_path / "m.avi"), [0], [np.zeros(4)], 1)


def test_long_cycles_collapse_to_three_blocks():
    prog = pde2net.compile_text(PM.format(scheme="fsi(tau = 0.4, cycle_length = 2000, cycles = 3)"))
    g = architecture_graph(prog.arch)
    adds = [d for _, d in g.nodes(data=True) if d["op"] == "add" and "extrapolation" in d["label"]]
    assert len(adds) == 3 and sum(d["repeat"] for d in adds) == 3 * 2000
    assert g.number_of_nodes() < 25


def test_graph_picture_without_graphviz(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import shutil

    from PIL import Image

    monkeypatch.setattr(shutil, "which", lambda name: None)
    prog = pde2net.compile_text(PM.format(scheme="fed(tau_max = 0.5, cycle_length = 30)"))
    g = architecture_graph(prog.arch)
    assert render_picture(g, str(tmp_path / "g.png")) == "matplotlib"
    w, h = Image.open(tmp_path / "g.png").size
    depth = len(list(nx.topological_generations(g)))
    assert h > w and depth == g.number_of_nodes()  # one row per layer: a chain
