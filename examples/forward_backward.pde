# Refused: forward-backward diffusivity, g < 0 for |s| > lambda (docs/theory.md §1: g >= 0 is needed)
pde forward_backward
param lambda = 0.1
field u(x)
diffusivity g(s2) = (1 - s2 / lambda^2) / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
scheme explicit(tau = 0.25, steps = 100)
