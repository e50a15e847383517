# Perona-Malik on a colour image: one joint diffusivity g(sum_c |grad u_c|^2) for the three
# channels, so edges stay aligned across R, G and B. A is block diagonal with identical blocks:
# the bound is the grayscale one, tau_max = h^2 / (4 L) = 0.25 (docs/theory.md §12)
pde color_pm

param lambda = 0.05
field u(x, y) channels 3

diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )

grid h = 1
size NX = 96, NY = 64
boundary neumann
scheme explicit(tau = 0.2, steps = 50)
