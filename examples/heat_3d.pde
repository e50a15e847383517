# The heat equation on a volume: the 3D forward-difference gradient and its transpose (the
# 7-point Laplacian). ||D||^2 < 4/hx^2 + 4/hy^2 + 4/hz^2, so the derived step is
# tau_max = 2 / 12 = h^2 / 6 (docs/theory.md §12)
pde heat_3d

field u(x, y, z)
equation dt(u) = laplace(u)

grid h = 1
size NX = 16, NY = 16, NZ = 16
boundary neumann
scheme explicit(tau = auto, steps = 20)
