# You-Kaveh fourth-order diffusion: u_t = -Delta( g((Delta u)^2) Delta u ) with the symmetric
# Laplacian Delta_h = -D^T D (forward-difference gradient and its transpose), so the network is
# Laplacian, activation, Laplacian; tau_max = 2 / (L (4/hx^2 + 4/hy^2)^2) = h^4 / 32
# (docs/theory.md §12).
pde you_kaveh

param lambda = 0.05
field u(x, y)

diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = -laplace(g(laplace(u)^2) * laplace(u))

grid h = 1
size NX = 48, NY = 32
boundary neumann
scheme explicit(tau = 0.03, steps = 100)
