# Weickert's diffusivity: nonmonotone flux, still L = 1 and stable up to h^2 / 2
pde weickert
param lambda = 0.1
param C = 3.31488
field u(x)
diffusivity g(s2) = 1 - exp(-C / (s2 / lambda^2)^4)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
size N = 256
boundary neumann
scheme explicit(tau = 0.5, steps = 100)
