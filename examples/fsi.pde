# Perona-Malik with the Fast Semi-Iterative scheme: a ResNet with an extra skip connection from
# two blocks back (extrapolation a_k = (4k + 2) / (2k + 3)); same cycle time as FED, no reordering.
pde perona_malik_fsi
param lambda = 0.1
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
grid h = 1
size N = 256
boundary neumann
scheme fsi(tau = 0.5, cycle_length = 20, cycles = 3)
