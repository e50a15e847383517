"""pde2net: numerical schemes for nonlinear diffusion PDEs, compiled into PyTorch networks.

    import pde2net
    prog = pde2net.load("examples/perona_malik.pde")
    net = prog.module()        # torch.nn.Module: a ResNet of explicit diffusion steps
    prog.stability             # the derived bound and verdict
    prog.source()              # standalone source of the same network

Importing pde2net does not import torch; building a module does.
"""
from .errors import PdeError
from .freeze import freeze
from .program import Program, compile_spec, compile_text, load

__version__ = "0.1.0"
__all__ = ["PdeError", "Program", "compile_spec", "compile_text", "freeze", "load", "__version__"]
