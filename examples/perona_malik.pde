# Perona-Malik diffusion of a 1D signal, explicit scheme = ResNet
pde perona_malik

param lambda = 0.1
field u(x)

diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )

grid h = 1
size N = 256
boundary neumann
scheme explicit(tau = 0.25, steps = 100)
