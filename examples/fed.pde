# Perona-Malik with Fast Explicit Diffusion: a ResNet whose blocks use the FED step sizes.
# One cycle of 20 blocks reaches diffusion time tau_max (n^2 + n) / 3 = 70, where the explicit
# scheme would need 140 blocks; the diffusivity is frozen per cycle (what the proof needs).
pde perona_malik_fed
param lambda = 0.1
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
grid h = 1
size N = 256
boundary neumann
scheme fed(tau_max = 0.5, cycle_length = 20, cycles = 3)
