# Perona-Malik with semi-implicit (lagged diffusivity) steps: a recurrent network; each step
# iterates a CG block 30 times, fed with u^k. Stable for every tau (CG from 0 never grows).
pde perona_malik_implicit
param lambda = 0.1
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
grid h = 1
size N = 256
boundary neumann
scheme implicit(tau = 20, steps = 10, solver = cg, iterations = 30)
