# Fourth-order nonlinear diffusion (m = 2): D = dxx, bound tau <= h^4 / (8 L)
pde fourth_order
param lambda = 0.5
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = -dxx( g(dxx(u)^2) * dxx(u) )
grid h = 1
size N = 256
boundary neumann
scheme explicit(tau = 0.1, steps = 200)
