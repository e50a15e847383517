# Perona-Malik diffusion of a grayscale image: two-channel gradient conv, vector activation,
# transposed conv (the divergence); tau_max = 2 / (L (4/hx^2 + 4/hy^2)) = h^2 / 4 (docs/theory.md §2)
pde perona_malik_2d

param lambda = 0.05
field u(x, y)

diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )

grid h = 1
size NX = 96, NY = 64
boundary neumann
scheme explicit(tau = 0.2, steps = 50)
