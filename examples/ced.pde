# Coherence-enhancing diffusion (Weickert 1999): closes interrupted line-like structures.
# T comes from the structure tensor K_rho * (grad u_sigma grad u_sigma^T), eigenvalues mu1 >= mu2:
# alpha across the coherent direction, alpha + (1 - alpha) exp(-C / (mu1 - mu2)^2) along it.
# L = 1, sup tr T = 1 + alpha; the default delta = alpha / (1 + alpha) gives
# tau_max = h^2 / 2 (docs/theory.md §9)
pde ced

param sigma = 0.5
param rho = 4
param alpha = 0.001
param C = 1
field u(x, y)

tensor T = coherence_enhancing(gauss(u, sigma), rho, alpha, C)
equation dt(u) = div( T * grad(u) )

grid h = 1
size NX = 64, NY = 64
boundary neumann
scheme explicit(tau = 0.5, steps = 50)
