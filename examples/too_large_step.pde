# Refused: tau = 0.6 exceeds the derived bound h^2 / (2 L) = 0.5
pde too_large_step
param lambda = 0.1
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
scheme explicit(tau = 0.6, steps = 100)
