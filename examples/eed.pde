# Edge-enhancing diffusion (Weickert 1994): smooths along edges, not across them.
# T has eigenvalue g(|v|^2) across v = grad(u_sigma) and 1 along it; the network is four
# directional conv/transposed-conv pairs (x, y, both diagonals) with the cell assembly.
# L = 1, sup tr T = 2; the default delta = 1/2 gives tau_max = h^2 / 2 (docs/theory.md §9)
pde eed

param lambda = 0.05
param sigma = 1
param C = 3.31488
field u(x, y)

diffusivity g(s2) = 1 - exp(-C / (s2 / lambda^2)^4)
tensor T = edge_enhancing(g, grad(gauss(u, sigma)))
equation dt(u) = div( T * grad(u) )

grid h = 1
size NX = 64, NY = 64
boundary neumann
scheme explicit(tau = auto, steps = 50)
