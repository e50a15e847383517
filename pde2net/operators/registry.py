"""Registration: importing this module registers every operator family (one import line each)
and installs the operator model's recogniser in the analyse stage.  A summand is offered to the
families in this order; the first that recognises it builds its term."""
from __future__ import annotations

from .. import analyse
from . import recognise
from . import anisotropic  # noqa: F401 - div(T * grad(u)) with a tensor (first: it takes only T's terms)
from . import isotropic  # noqa: F401 - div(g(|grad u_sigma|^2) grad u), laplace: 1D-3D, channels
from . import axis, fourth  # noqa: F401 - one-axis terms of any order; You-Kaveh fourth order
from . import reaction  # noqa: F401 - the data and reaction part (alpha (f - u), decay, sources, N(u))

analyse.register_operator_model(recognise.recognise)
