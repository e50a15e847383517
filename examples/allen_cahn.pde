# Allen-Cahn phase separation: linear diffusion plus the pointwise reaction (u - u^3) / eps^2.
# The network is the heat equation's residual block with a pointwise reaction branch.  A nonlinear
# reaction has no Euclidean stability statement; the verdict rests on the invariant-region rule of
# docs/theory.md §11: the 5-point stencil is nonnegative with diagonal <= W = 4 (h = 1), and
# R(u) = (u - u^3) / eps^2 has roots -1, 1 with min R' = -2 / eps^2 on [-1, 1], so for
# tau <= 1 / (W + 2 / eps^2) = 2/9 every input with values in [-1, 1] stays in [-1, 1].  Nothing is
# claimed for inputs outside [-1, 1] (the explicit cubic blows up for large |u|).
pde allen_cahn

param eps = 2
field u(x, y)

equation dt(u) = laplace(u) + (u - u^3) / eps^2

grid h = 1
size NX = 64, NY = 64
boundary neumann
scheme explicit(tau = 0.2, steps = 200)
