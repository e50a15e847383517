# Allen-Cahn phase separation: linear diffusion plus the pointwise reaction (u - u^3) / eps^2.
# The network is the heat equation's residual block with a pointwise reaction branch.  A nonlinear
# reaction has no Euclidean stability statement; the verdict rests on the invariant-region rule
# of docs/theory.md §11 (values in [-1, 1] stay in [-1, 1] for tau <= 1 / (W + 2 / eps^2), W the
# diagonal bound of a nonnegative stencil) where it applies, and is "cannot prove" otherwise.
pde allen_cahn

param eps = 2
field u(x, y)

equation dt(u) = laplace(u) + (u - u^3) / eps^2

grid h = 1
size NX = 64, NY = 64
boundary neumann
scheme explicit(tau = 0.2, steps = 200)
