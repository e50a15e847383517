# Per-axis Perona-Malik: one nonlinear diffusion along x plus one along y (a sum of two terms).
# Each term is a forward-difference conv along its axis, the activation g((D u)^2) D u, and the
# transposed conv; the bound adds the terms' bounds: tau_max = 2 / (4/hx^2 + 4/hy^2) = h^2 / 4
# (docs/theory.md §1, §2).
pde per_axis

param lambda = 0.05
field u(x, y)

diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx(g(dx(u)^2) * dx(u)) + dy(g(dy(u)^2) * dy(u))

grid h = 1
size NX = 48, NY = 32
boundary neumann
scheme explicit(tau = 0.2, steps = 50)
