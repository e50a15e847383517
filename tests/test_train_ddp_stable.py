"""DistributedDataParallel through torchrun for the stable filter-bank networks: a
pde2net.nn.StableResNet and the network of a .pde spec with a learned bank and a learned
diffusivity.  Two gloo processes (CPU, float64) each train on their half of a fixed batch; after a
few Adam steps the replicas' parameters must be identical, and equal to one process trained on
the combined batch (DDP averages the gradients of equal-size halves: the gradient of the mean
loss over the whole batch) to round-off."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

SPEC = """pde learned_ddp
field u(x, y)
diffusivity g(s2) = learned(knots = 8, L = 1)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
boundary dirichlet
stencil learned(size = 3, filters = 4)
scheme explicit(steps = 2)
"""

# The training both the workers and the single-process reference run (a module-level function
# in the written script; the test imports the same file).
WORKER = r'''
import os
import sys

import torch

SPEC = {spec!r}
STEPS, BATCH, N = 4, 4, 12


def build(kind):
    torch.manual_seed(0)
    if kind == "resnet":
        from pde2net.nn import StableResNet
        net = StableResNet(2, channels=1, filters=3, size=3, dim=2, seed=0, activation="learned",
                           knots=6)
    else:
        from pde2net.program import compile_text
        net = compile_text(SPEC).module(trainable=True)
    return net.double()


def batch(step):
    gen = torch.Generator().manual_seed(100 + step)
    clean = torch.rand((BATCH, 1, N, N), generator=gen, dtype=torch.float64)
    return clean + 0.1 * torch.randn(clean.shape, generator=gen, dtype=torch.float64), clean


def train(net, rank=0, world=1):
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    part = BATCH // world
    for step in range(STEPS):
        noisy, clean = batch(step)
        noisy, clean = noisy[rank * part:(rank + 1) * part], clean[rank * part:(rank + 1) * part]
        opt.zero_grad()
        ((net(noisy) - clean) ** 2).mean().backward()
        opt.step()
    return net


if __name__ == "__main__":
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    kind, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    net = build(kind)
    ddp = DDP(net)
    train(ddp, rank, world)
    torch.save(net.state_dict(), os.path.join(out, f"{{kind}}_rank{{rank}}.pt"))
    dist.destroy_process_group()
'''


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resnet", "spec"])
def test_ddp_replicas_agree_and_equal_single_process(tmp_path, kind):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER.format(spec=SPEC))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), kind, str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"{kind}_rank{r}.pt") for r in (0, 1))
    assert r0.keys() == r1.keys() and len(r0) >= 6
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k

    # the single-process reference: the same script's training on the combined batch
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        worker = importlib.import_module("ddp_worker")
        importlib.reload(worker)
        torch.set_num_threads(1)
        initial = {k: v.clone() for k, v in worker.build(kind).state_dict().items()}
        ref = worker.train(worker.build(kind)).state_dict()
    finally:
        sys.path.remove(str(tmp_path))
    for k in r0:
        assert r0[k].dtype == torch.float64
        assert torch.allclose(r0[k], ref[k], rtol=1e-10, atol=1e-12), \
            (k, float((r0[k] - ref[k]).abs().max()))
    # training moved the parameters
    assert any(not torch.equal(initial[k], ref[k]) for k in ref)
