# Linear sixth-order diffusion (m = 3) with central differences on a periodic grid
pde sixth_order
field u(x)
equation dt(u) = dxxxxxx(u)
grid h = 1
size N = 128
boundary periodic
stencil central
scheme explicit(tau = 0.25, steps = 50)
