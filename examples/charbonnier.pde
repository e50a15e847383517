# Charbonnier diffusion: a bounded, monotone flux (L = 1)
pde charbonnier
param lambda = 0.1
field u(x)
diffusivity g(s2) = 1 / sqrt(1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
size N = 256
boundary periodic
scheme explicit(tau = 0.4, steps = 100)
