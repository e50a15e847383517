# Catte et al.'s regularised Perona-Malik: the diffusivity sees the gradient of the presmoothed
# image K_sigma * u (a fixed Gaussian conv branch, truncated at 3 sigma, renormalised, mirrored at
# the neumann boundary); the differences still act on u. Presmoothing leaves the bound unchanged:
# tau_max = 2 / (L (4/hx^2 + 4/hy^2)) = h^2 / 4 (docs/theory.md §10)
pde catte

param lambda = 0.05
param sigma = 1
field u(x, y)

diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(gauss(u, sigma)))^2) * grad(u) )

grid h = 1
size NX = 96, NY = 64
boundary neumann
scheme explicit(tau = 0.2, steps = 50)
