# Linear heat equation: the ResNet's activation is the identity
pde heat
field u(x)
equation dt(u) = dxx(u)
grid h = 1
size N = 256
boundary neumann
scheme explicit(tau = 0.5, steps = 200)   # tau at the bound h^2/2: still stable
