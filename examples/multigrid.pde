# Linear diffusion with implicit steps solved by multigrid V-cycles: a U-net (Jacobi smoothing,
# strided restriction, transposed-conv prolongation, Galerkin coarse operators). N = 2^k + 1 uses
# vertex-centred transfers, N = 2^k cell-centred ones. Linear diffusion only.
pde heat_multigrid
field u(x)
equation dt(u) = dxx(u)
grid h = 1
size N = 257
boundary neumann
scheme multigrid(tau = 100, steps = 5, pre = 2, post = 2, cycles = 2)
