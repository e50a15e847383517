"""Stable learned filter banks: ResNet blocks whose Euclidean norm never grows, for every value
of their parameters.

One block (docs/theory.md §1, §13) maps a field ``u`` with C channels to C channels:

    u <- u - tau * sum_k W_k^T Phi_k(W_k u),        k = 1..K

- The bank ``W`` is ONE convolution with K output channels and C input channels (kernel size
  ``size`` in 1D, ``size x size`` in 2D), zero padding ``size // 2``: filter ``W_k`` maps the C
  channels to one feature map.  ``W^T`` is ``conv_transpose`` with the SAME weight and padding,
  the exact adjoint of the zero-padded correlation (reflect / replicate padding would not be:
  docs/theory.md §13).  The zero-padded correlation is a section ``P T E`` of the bi-infinite
  Toeplitz operator T (E: zero extension, P: restriction, both of norm 1), so
  ``||W||^2 = ||sum_k W_k^T W_k|| <= ||T||^2 = S = sup_theta lambda_max(What(theta)^H What(theta))``.
- ``Phi_k`` acts pointwise on feature map k with ``Phi_k(0) = 0`` and ``0 <= Phi_k(s)/s <= L``
  (no bias inside Phi).  Then ``u+ = (I - tau W^T G W) u`` with ``G = diag(Phi(s)/s)`` in [0, L],
  a symmetric matrix with spectrum in ``[1 - tau L ||W||^2, 1]``: if ``tau L ||W||^2 <= 2`` the norm
  never increases.
- ``tau = theta * 2 / (L * max(B(W), B_FLOOR))`` with ``theta = THETA_MAX * sigmoid(rho)`` in
  ``[0, THETA_MAX]`` and ``B(W) >= S`` a guaranteed bound (:func:`bound_b2` by default).  Hence
  ``tau L ||W||^2 <= 2 theta B / max(B, B_FLOOR) <= 2 THETA_MAX < 2`` for EVERY parameter value;
  ``THETA_MAX = 1 - 2^-10`` leaves room for the float rounding of B and tau.

Finiteness for every finite value of the raw parameters (weight normalisation): the effective
filter is ``W_k = gain_k * V_k / ||V_k||_F`` with ``gain_k = exp(clip(a_k, -LOG_GAIN_MAX,
LOG_GAIN_MAX))``.  ``V_k / ||V_k||`` is computed as ``x / sqrt(max(|x|^2, 1))`` with
``x = V_k / max|V_k|``: every entry of x is in [-1, 1] and one is +-1, so ``|x|^2 >= 1`` and the
clamp changes nothing unless ``V_k = 0``, where the filter is exactly 0 (no 0/0, no overflow
at 1e30, no underflow to a wrong direction at 1e-30).  So ``|W_k| <= exp(LOG_GAIN_MAX)``
entrywise whatever the raw values, B is finite, and ``tau <= 2 / (L B_FLOOR)`` is finite; a zero
bank gives ``tau * W^T(...) = 0``: the identity.  (Inputs near the float range, e.g. 1e30 in
float32 with the largest gains and a linear Phi, can still overflow in ``W^T Phi(W u)``; the
bound is about exact arithmetic, the rounding margin is THETA_MAX.)  Bounds on S (docs/theory.md §13):

- ``B1 = sum_{k,c} ||w_kc||_1^2``                          (:func:`bound_b1`)
- ``B2 = max_c sum_c' ||r_cc'||_1``, ``r_cc' = sum_k w_kc (*) w_kc'`` (Gershgorin) (:func:`bound_b2`)
- ``Gm* = Gm / (1 - (n d pi)^2 / (2 M^2))`` with Gm the max of lambda_max over an M^d frequency
  grid, n = size - 1, d the dimension (:func:`bound_grid`).  The plain grid max Gm is NOT a bound.

Activations (:func:`make_activation`): ``"pm"`` (Perona-Malik), ``"charbonnier"``, ``"linear"``,
``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"silu"`` and ``"learned"``
(:class:`LearnedDiffusivity`, ``Phi(s) = s L sigmoid(a(s^2))`` with a learned ``a``).
``"softplus"`` is refused: ``softplus(0) = log 2 != 0``.
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Activation", "PeronaMalik", "Charbonnier", "Linear", "ReLU", "LeakyReLU", "Tanh",
           "SiLU", "LearnedDiffusivity", "RatioActivation", "make_activation", "bound_b1",
           "bound_b2", "bound_grid",
           "grid_correction", "autocorrelations", "dense_bank", "BlockCertificate",
           "NetCertificate", "StableBlock", "StableResNet"]

THETA_MAX = 1.0 - 2.0 ** -10
B_FLOOR = 1e-12
LOG_GAIN_MAX = 10.0
GRID_M = 64
CITATION = "docs/theory.md §13"


# ---------------------------------------------------------------------------- activations
class Activation(nn.Module):
    """A pointwise flux ``Phi`` with ``Phi(0) = 0`` and ``0 <= Phi(s)/s <= L`` for all s != 0.

    ``forward`` takes feature maps ``(B, K, *spatial)`` (any shape for shared activations);
    ``numpy`` is an independent float64 evaluation of the same formula (the dense reference)."""

    name = "activation"
    L: float = 1.0

    def numpy(self, s: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def certificate(self) -> dict[str, Any]:
        return {"activation": self.name, "L": self.L,
                "statement": f"0 <= Phi(s)/s <= L = {self.L:g} for all s != 0, Phi(0) = 0 "
                             f"({CITATION})"}

    @torch.no_grad()
    def verify(self, points: int = 20001, s_max: float = 50.0) -> dict[str, Any]:
        """Checks, in float64, that the module matches :meth:`numpy` to 1e-12 (relative to |s|)
        and ``0 <= Phi(s)/s <= L`` on a dense grid of [-s_max, s_max], at +-1e6 and +-1e30, with
        Phi(0) = 0 and finite values."""
        act = copy.deepcopy(self).double()
        s = np.concatenate([np.linspace(-s_max, s_max, points), [-1e30, -1e6, 1e6, 1e30, 0.0]])
        shape = (1, self.filters, s.size) if getattr(self, "filters", 1) > 1 else (s.size,)
        x = np.broadcast_to(s, shape).copy()
        got = act(torch.tensor(x)).numpy()
        ref = act.numpy(x)
        err = float((np.abs(got - ref) / np.maximum(np.abs(x), 1.0)).max())
        nz = x != 0
        ratio = got[nz] / x[nz]
        ok = (err <= 1e-12 and bool(np.isfinite(got).all()) and bool((got[~nz] == 0).all())
              and float(ratio.min()) >= 0.0 and float(ratio.max()) <= self.L * (1 + 1e-15))
        return {"ok": bool(ok), "max_rel_error_vs_numpy": err, "min_ratio": float(ratio.min()),
                "max_ratio": float(ratio.max()), "L": self.L}

    def extra_repr(self) -> str:
        return f"L={self.L:g}"


class PeronaMalik(Activation):
    """``Phi(s) = s / (1 + s^2/lambda^2)``: g in (0, 1], L = 1; nonmonotone flux."""

    name = "pm"

    def __init__(self, contrast: float = 1.0) -> None:
        super().__init__()
        self.contrast = _positive(contrast, "contrast")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        # s / (1 + (s/l)^2): (s/l)^2 may overflow to inf, then Phi = 0, never NaN
        return s / (1.0 + (s / self.contrast) ** 2)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return s / (1.0 + (s / self.contrast) ** 2)


class Charbonnier(Activation):
    """``Phi(s) = s / sqrt(1 + s^2/lambda^2)``: L = 1, monotone."""

    name = "charbonnier"

    def __init__(self, contrast: float = 1.0) -> None:
        super().__init__()
        self.contrast = _positive(contrast, "contrast")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s / torch.sqrt(1.0 + (s / self.contrast) ** 2)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return s / np.sqrt(1.0 + (s / self.contrast) ** 2)


class Linear(Activation):
    """``Phi(s) = s``: L = 1 (linear diffusion with a learned bank)."""

    name = "linear"

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def numpy(self, s: np.ndarray) -> np.ndarray:
        return s.copy()


class ReLU(Activation):
    """``Phi(s) = max(s, 0)``: Phi(s)/s in {0, 1}, L = 1."""

    name = "relu"

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.relu(s)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        return np.maximum(s, 0.0)


class LeakyReLU(Activation):
    """``Phi(s) = s (s > 0), a s (s <= 0)`` with 0 <= a <= 1: Phi(s)/s in {a, 1}, L = 1."""

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        a = float(negative_slope)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"leaky_relu needs 0 <= negative_slope <= 1 (Phi(s)/s in [0, 1]); got {a}")
        self.negative_slope = a

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(s, self.negative_slope)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        return np.where(s > 0, s, self.negative_slope * s)


class Tanh(Activation):
    """``Phi(s) = tanh(s)``: tanh(s)/s in (0, 1], L = 1."""

    name = "tanh"

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(s)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        return np.tanh(s)


class SiLU(Activation):
    """``Phi(s) = s sigmoid(s)``: Phi(s)/s = sigmoid(s) in (0, 1), L = 1."""

    name = "silu"

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return F.silu(s)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return s / (1.0 + np.exp(-s))


class LearnedDiffusivity(Activation):
    """A learned flux ``Phi(s) = s g(s^2)``, ``g = L sigmoid(a(s))``, ``a`` a normalised
    radial-basis interpolant of learned values ``v_j`` (the logits at the knots):

        a(s) = sum_j v_j psi_j(t) / sum_i psi_i(t),   t = clip(s, -s_max, s_max),
        psi_j(t) = exp(-(t - s_j)^2 / (2 h^2)) + exp(-(t + s_j)^2 / (2 h^2)),

    ``knots`` centres ``s_j`` evenly spaced on [0, s_max], width h = their spacing.  Each psi_j
    is even, so a is a function of s^2 (smooth on (-s_max, s_max), constant beyond: the tail
    g = L sigmoid(a(s_max)) is learned too, so nonmonotone fluxes such as Perona-Malik's
    s / (1 + s^2) are reachable).  Well defined for every s: the clip keeps the exponents
    finite and the nearest knot is within h/2 of t, so ``sum_i psi_i(t) >= exp(-1/8)``.
    ``0 <= g <= L`` holds BY CONSTRUCTION for every value of v: sigmoid maps every float
    (including +-inf) into [0, 1] and the rounding of ``L * x`` with x <= 1 never exceeds L.
    The partition of unity makes v_j the value of a near knot j: a well-conditioned fit.

    ``filters > 1``: one set of values per feature map (axis 1 of the input); 1: shared.
    """

    name = "learned"

    def __init__(self, knots: int = 16, L: float = 1.0, s_max: float = 3.0, filters: int = 1,
                 init_g: float = 0.5) -> None:
        super().__init__()
        if int(knots) < 2:
            raise ValueError(f"knots must be >= 2; got {knots}")
        if int(filters) < 1:
            raise ValueError(f"filters must be >= 1; got {filters}")
        self.L = _positive(L, "L")
        self.s_max = _positive(s_max, "s_max")
        self.knots, self.filters = int(knots), int(filters)
        if not 0.0 < init_g < 1.0:
            raise ValueError(f"init_g (g(s) / L at initialisation) must be in (0, 1); got {init_g}")
        self.width = self.s_max / (self.knots - 1)
        self.values = nn.Parameter(torch.full((self.filters, self.knots),
                                              math.log(init_g / (1.0 - init_g))))

    def centres(self, dtype: torch.dtype) -> torch.Tensor:
        """The knots s_j, evenly spaced on [0, s_max] (built in ``dtype``: exact in float64)."""
        return torch.linspace(0.0, self.s_max, self.knots, dtype=dtype)

    def _values_for(self, s: torch.Tensor) -> torch.Tensor:
        """v (F, knots) viewed to broadcast against ``s[..., None]`` with F on axis 1 (or shared)."""
        v = self.values.to(s.dtype)
        if self.filters == 1:
            return v[0]
        if s.dim() < 2 or s.shape[1] != self.filters:
            raise ValueError(f"a per-filter activation with {self.filters} filters needs inputs "
                             f"(B, {self.filters}, ...); got shape {tuple(s.shape)}")
        return v.view(self.filters, *([1] * (s.dim() - 2)), self.knots)

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        """a(s) (same shape as s)."""
        c = self.centres(s.dtype)
        h2 = 2.0 * self.width ** 2
        t = s.clamp(-self.s_max, self.s_max).unsqueeze(-1)
        psi = torch.exp(-(t - c) ** 2 / h2) + torch.exp(-(t + c) ** 2 / h2)
        return (psi * self._values_for(s)).sum(-1) / psi.sum(-1)

    def g(self, s: torch.Tensor) -> torch.Tensor:
        """The diffusivity g = Phi(s)/s in [0, L]."""
        return self.L * torch.sigmoid(self.logits(s))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s * self.g(s)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        c = np.linspace(0.0, self.s_max, self.knots)
        v = self.values.detach().double().numpy()
        v = v.reshape(self.filters, *([1] * (s.ndim - 2)), self.knots) if self.filters > 1 else v[0]
        h2 = 2.0 * self.width ** 2
        t = np.clip(s, -self.s_max, self.s_max)[..., None]
        psi = np.exp(-(t - c) ** 2 / h2) + np.exp(-(t + c) ** 2 / h2)
        a = (psi * v).sum(-1) / psi.sum(-1)
        with np.errstate(over="ignore"):
            g = self.L / (1.0 + np.exp(-a))
        return s * g

    def extra_repr(self) -> str:
        return f"knots={self.knots}, L={self.L:g}, s_max={self.s_max:g}, filters={self.filters}"


class RatioActivation(Activation):
    """A fixed flux given by its diffusivity ``r(s) = Phi(s)/s``, proven to lie in [0, L]:
    ``Phi(s) = s * clamp(nan_to_num(r(s)), 0, L)``.  The clamp changes nothing where r is what
    was proven, and makes ``0 <= Phi(s)/s <= L`` hold in float by construction (rounding, or an
    overflow of r's expression far out, cannot break the certificate).  ``ratio`` (torch) and
    ``ratio_numpy`` (NumPy float64, the reference) evaluate r; a constant may come back as a
    Python float.  Used for the fixed diffusivity of a ``.pde`` spec with a learned bank."""

    def __init__(self, ratio: Any, ratio_numpy: Any, L: float, name: str = "fixed") -> None:
        super().__init__()
        self.L = _positive(L, "L")
        self._ratio, self._ratio_numpy, self.name = ratio, ratio_numpy, str(name)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        r = torch.as_tensor(self._ratio(s), dtype=s.dtype, device=s.device)
        return s * torch.nan_to_num(r, nan=0.0, posinf=self.L, neginf=0.0).clamp(0.0, self.L)

    def numpy(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        with np.errstate(all="ignore"):
            r = np.broadcast_to(np.asarray(self._ratio_numpy(s), dtype=np.float64), s.shape)
        return s * np.clip(np.nan_to_num(r, nan=0.0, posinf=self.L, neginf=0.0), 0.0, self.L)

    def extra_repr(self) -> str:
        return f"{self.name}, L={self.L!r}"


_ACTIVATIONS = {"pm": PeronaMalik, "charbonnier": Charbonnier, "linear": Linear, "relu": ReLU,
                "leaky_relu": LeakyReLU, "tanh": Tanh, "silu": SiLU, "learned": LearnedDiffusivity}
_REFUSED = {
    "softplus": "softplus(0) = log 2 != 0, so Phi(s)/s is unbounded near 0: no L with "
                "0 <= Phi(s)/s <= L exists (docs/theory.md §13)",
    "sigmoid": "sigmoid(0) = 1/2 != 0: Phi(0) = 0 fails (docs/theory.md §13)",
}


def make_activation(activation: Union[str, Activation], filters: int = 1, shared: bool = True,
                    **options: Any) -> Activation:
    """The activation named ``activation`` (one per bank if ``shared``, else per filter for the
    learned one).  Options: ``contrast`` (pm, charbonnier), ``negative_slope`` (leaky_relu),
    ``knots``, ``L``, ``s_max``, ``init_g`` (learned).  Refuses fluxes outside docs/theory.md §13."""
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name or an Activation; got {type(activation).__name__}")
    name = activation.lower()
    if name in _REFUSED:
        raise ValueError(f"activation {activation!r} is refused: {_REFUSED[name]}")
    if name not in _ACTIVATIONS:
        close = difflib.get_close_matches(name, list(_ACTIVATIONS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown activation {activation!r}: expected one of "
                         f"{', '.join(sorted(_ACTIVATIONS))}{hint}")
    cls = _ACTIVATIONS[name]
    allowed = {"pm": {"contrast"}, "charbonnier": {"contrast"}, "leaky_relu": {"negative_slope"},
               "learned": {"knots", "L", "s_max", "init_g"}}.get(name, set())
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"activation {name!r} takes no option(s) {sorted(unknown)}; "
                         f"it takes {sorted(allowed) or 'none'}")
    if name == "learned":
        return cls(filters=1 if shared else filters, **options)
    return cls(**options)


def _positive(x: float, what: str) -> float:
    x = float(x)
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{what} must be a positive finite number; got {x}")
    return x


# ---------------------------------------------------------------------------- bounds on S
def bound_b1(w: torch.Tensor) -> torch.Tensor:
    """``B1 = sum_{k,c} ||w_kc||_1^2 >= S`` for a bank ``w`` of shape (K, C, *kernel):
    ``||W||^2 <= sum_k ||W_k||^2``, ``||W_k||^2 <= sum_c ||W_kc||^2`` and a correlation's norm is
    at most the l1 norm of its kernel."""
    return w.abs().flatten(2).sum(-1).pow(2).sum()


def autocorrelations(w: torch.Tensor) -> torch.Tensor:
    """``r[c', c, tau] = sum_k sum_x w_kc(x) w_kc'(x + tau)`` for all lags (full correlation),
    shape (C, C, *(2 size - 1)): the coefficients of the symbol of ``W^T W``."""
    d = w.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    wt = w.transpose(0, 1)  # (C, K, *kernel): batch C', channels K
    return conv(wt, wt, padding=tuple(s - 1 for s in w.shape[2:]))


def bound_b2(w: torch.Tensor) -> torch.Tensor:
    """``B2 = max_c sum_c' ||r_cc'||_1 >= S``: at every frequency the C x C Hermitian symbol
    ``M(theta)_cc' = sum_tau r_cc'(tau) e^{i theta tau}`` has ``|M_cc'| <= ||r_cc'||_1``, and
    Gershgorin bounds lambda_max by the largest absolute row sum."""
    r = autocorrelations(w)
    return r.abs().flatten(2).sum(-1).sum(0).max()


def grid_correction(size: int, dim: int, M: int) -> float:
    """``1 - (n d pi)^2 / (2 M^2)``, n = size - 1 (for 3 x 3 filters in 2D: ``1 - 8 pi^2 / M^2``).

    Proof that ``Gm / grid_correction >= S``: let the sup S be attained at theta* by the unit
    vector x, and ``p(theta) = |What(theta) x|^2 <= S`` everywhere.  p is a trigonometric sum with
    frequencies (lags) in [-n, n] per axis, so along the segment from theta* to the nearest grid
    point, ``q(t) = p(theta* + t e)`` (|e| = 1) is an entire function of exponential type
    ``sigma = n |e|_1``, bounded by S on the real line; Bernstein's inequality gives
    ``|q''| <= sigma^2 S``.  q'(0) = 0 (an interior maximum of a periodic function), so
    ``q(t) >= S (1 - sigma^2 t^2 / 2)``, and ``sigma t = n |t e|_1 <= n d pi / M`` since the grid
    point is within pi/M of theta* on every axis.  Hence ``Gm >= p(grid point) >= S *
    grid_correction``."""
    n = max(int(size) - 1, 0)
    return 1.0 - (n * dim * math.pi) ** 2 / (2.0 * M * M)


def bound_grid(w: torch.Tensor, M: int = GRID_M) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Gm, Gm*)``: Gm the max of lambda_max(What^H What) over the M^d grid of frequencies
    ``2 pi j / M`` (NOT a bound: it can miss the peak), and ``Gm* = Gm / grid_correction >= S``."""
    d = w.dim() - 2
    size = max(w.shape[2:])
    corr = grid_correction(size, d, M)
    if M < 9 or M < size or corr <= 0:
        raise ValueError(f"frequency grid M = {M} too coarse for a {size}-tap {d}D bank "
                         f"(need M >= 9, M >= size and 1 - (n d pi)^2/(2 M^2) > 0)")
    dims = tuple(range(2, 2 + d))
    what = torch.fft.fftn(w, s=(M,) * d, dim=dims)           # (K, C, M, ..)
    what = what.permute(*range(2, 2 + d), 0, 1).reshape(-1, w.shape[0], w.shape[1])
    gm = torch.linalg.matrix_norm(what, ord=2).pow(2).max()
    return gm, gm / corr


BOUNDS = ("b1", "b2", "grid")


# ---------------------------------------------------------------------------- certificates
@dataclass
class BlockCertificate:
    """What holds for one block with its current parameters."""

    statement: str
    L: float
    tau: float
    theta: float
    training_bound: str
    B_training: float
    B1: float
    B2: float
    Gm: float
    Gm_star: float
    M: int
    B_printed: float
    tau_L_B: float
    holds: bool
    dense_norm_sq: Optional[float] = None
    dense_grid: Optional[tuple[int, ...]] = None
    tau_L_dense: Optional[float] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NetCertificate:
    """A ResNet of certified blocks: a composition of non-expansive maps is non-expansive."""

    statement: str
    blocks: list[BlockCertificate] = field(default_factory=list)
    holds: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"statement": self.statement, "holds": self.holds,
                "blocks": [b.as_dict() for b in self.blocks]}


# ---------------------------------------------------------------------------- dense reference
def dense_bank(w: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The dense float64 matrix of the zero-padded correlation bank ``w`` (K, C, *kernel) on a
    grid ``shape``: rows (k, output position), columns (c, input position); padding size//2.
    Returns the matrix and the shape (K, *outputs) of the feature maps."""
    w = np.asarray(w, dtype=np.float64)
    K, C, ks = w.shape[0], w.shape[1], w.shape[2:]
    pads = [s // 2 for s in ks]
    outs = [n + 2 * p - s + 1 for n, p, s in zip(shape, pads, ks)]
    A = np.zeros((K, *outs, C, *shape))
    for taps in np.ndindex(*ks):
        for o in np.ndindex(*outs):
            i = tuple(oo + t - p for oo, t, p in zip(o, taps, pads))
            if all(0 <= ii < n for ii, n in zip(i, shape)):
                A[(slice(None), *o, slice(None), *i)] += w[(slice(None), slice(None), *taps)]
    return A.reshape(K * int(np.prod(outs)), C * int(np.prod(shape))), (K, *outs)


# ---------------------------------------------------------------------------- the block
class StableBlock(nn.Module):
    """``u <- u - tau sum_k W_k^T Phi_k(W_k u)`` on ``(B, channels, *spatial)``; stable for every
    parameter value (module docstring).

    channels: C (in = out); filters: K; size: kernel size per axis; dim: 1 or 2;
    activation: a name of :func:`make_activation` or an :class:`Activation`;
    shared_activation: one learned Phi for all filters (else one per filter);
    bound: "b2" (default), "b1" or "grid" (Gm*, slower): the B(W) inside tau;
    theta0, gain0: initial theta and filter gain; activation_options: e.g. contrast=0.1, knots=16.
    """

    def __init__(self, channels: int = 1, filters: int = 8, size: int = 3, dim: int = 2,
                 activation: Union[str, Activation] = "pm", shared_activation: bool = True,
                 bound: str = "b2", theta0: float = 0.5, gain0: float = 1.0,
                 grid_m: int = GRID_M, generator: Optional[torch.Generator] = None,
                 **activation_options: Any) -> None:
        super().__init__()
        self.channels, self.filters, self.size, self.dim = (int(channels), int(filters),
                                                            int(size), int(dim))
        if self.dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2; got {dim}")
        if min(self.channels, self.filters, self.size) < 1:
            raise ValueError("channels, filters and size must be >= 1")
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}; got {bound!r}")
        if not 0.0 < theta0 < THETA_MAX:
            raise ValueError(f"theta0 must be in (0, {THETA_MAX}); got {theta0}")
        self.bound, self.grid_m = bound, int(grid_m)
        bound_grid(torch.zeros(1, 1, *([self.size] * self.dim)), self.grid_m)  # validates M
        self.padding = self.size // 2
        kshape = (self.filters, self.channels) + (self.size,) * self.dim
        fan = self.channels * self.size ** self.dim
        self.weight = nn.Parameter(torch.randn(kshape, generator=generator) / math.sqrt(fan))
        self.log_gain = nn.Parameter(torch.full((self.filters,), math.log(_positive(gain0, "gain0"))))
        self.rho = nn.Parameter(torch.tensor(math.log(theta0 / THETA_MAX / (1.0 - theta0 / THETA_MAX))))
        self.activation = make_activation(activation, self.filters, shared_activation,
                                          **activation_options)
        self.L = float(self.activation.L)

    # -- parametrisation
    def effective_weight(self) -> torch.Tensor:
        """``W_k = gain_k V_k / ||V_k||_F`` computed without overflow, underflow or 0/0."""
        v = self.weight.flatten(1)
        m = v.abs().amax(dim=1, keepdim=True)
        x = v / torch.where(m > 0, m, torch.ones_like(m))
        unit = x / torch.sqrt((x * x).sum(dim=1, keepdim=True).clamp_min(1.0))
        gain = torch.exp(self.log_gain.clamp(-LOG_GAIN_MAX, LOG_GAIN_MAX))
        return (gain[:, None] * unit).view_as(self.weight)

    def theta(self) -> torch.Tensor:
        return THETA_MAX * torch.sigmoid(self.rho)

    def norm_bound(self, w: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The training bound B(W) >= S (``self.bound``)."""
        w = self.effective_weight() if w is None else w
        if self.bound == "b1":
            return bound_b1(w)
        if self.bound == "grid":
            return bound_grid(w, self.grid_m)[1]
        return bound_b2(w)

    def tau(self, w: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``theta 2 / (L max(B, B_FLOOR))``: ``tau L ||W||^2 <= 2 theta < 2``."""
        return self.theta() * 2.0 / (self.L * self.norm_bound(w).clamp_min(B_FLOOR))

    # -- the operator
    def W(self, u: torch.Tensor, w: Optional[torch.Tensor] = None) -> torch.Tensor:
        w = self.effective_weight() if w is None else w
        conv = F.conv1d if self.dim == 1 else F.conv2d
        return conv(u, w.to(u.dtype), padding=self.padding)

    def Wt(self, z: torch.Tensor, w: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The exact adjoint of :meth:`W` (conv_transpose, same weight and zero padding)."""
        w = self.effective_weight() if w is None else w
        convt = F.conv_transpose1d if self.dim == 1 else F.conv_transpose2d
        return convt(z, w.to(z.dtype), padding=self.padding)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self._check(u)
        w = self.effective_weight()
        tau = self.tau(w).to(u.dtype)
        return u - tau * self.Wt(self.activation(self.W(u, w)), w)

    def _check(self, u: torch.Tensor) -> None:
        if not isinstance(u, torch.Tensor) or not u.is_floating_point():
            raise TypeError("expected a floating-point torch.Tensor")
        if u.dim() != self.dim + 2 or u.shape[1] != self.channels:
            raise ValueError(f"expected (batch, {self.channels}, {'N' if self.dim == 1 else 'H, W'}); "
                             f"got shape {tuple(u.shape)}")

    # -- what is proven and what is checked
    @torch.no_grad()
    def certificate(self, dense_grid: Optional[tuple[int, ...]] = None) -> BlockCertificate:
        """The bound statement with the current numbers; ``dense_grid`` (e.g. (8, 8)) also builds
        the dense matrix of the bank there and reports its true ``||W||^2``."""
        w32 = self.effective_weight()
        tau = float(self.tau(w32))
        w = w32.double()
        b1, b2 = float(bound_b1(w)), float(bound_b2(w))
        gm, gms = (float(x) for x in bound_grid(w, self.grid_m))
        printed = min(b1, b2, gms)
        cert = BlockCertificate(
            statement=(f"||u+||_2 <= ||u||_2 for every u: u+ = (I - tau W^T G W) u with G = "
                       f"diag(Phi(s)/s) in [0, L], W^T the exact adjoint (zero padding), and "
                       f"tau L ||W||^2 <= tau L B < 2 with B >= sup_theta lambda_max(What^H What) "
                       f">= ||W||^2 ({CITATION})"),
            L=self.L, tau=tau, theta=float(self.theta()), training_bound=self.bound,
            B_training=float(self.norm_bound(w32)), B1=b1, B2=b2, Gm=gm, Gm_star=gms,
            M=self.grid_m, B_printed=printed, tau_L_B=tau * self.L * printed,
            holds=bool(tau * self.L * printed < 2.0))
        if dense_grid is not None:
            A, _ = dense_bank(w.numpy(), tuple(dense_grid))
            nsq = float(np.linalg.eigvalsh(A.T @ A)[-1])
            cert.dense_norm_sq, cert.dense_grid = nsq, tuple(dense_grid)
            cert.tau_L_dense = tau * self.L * nsq
        return cert

    def reference(self, u: np.ndarray) -> np.ndarray:
        """The block in dense NumPy float64: ``u - tau A^T Phi(A u)`` with A = :func:`dense_bank`
        of the current weights and Phi evaluated by the activation's NumPy formula."""
        u = np.asarray(u, dtype=np.float64)
        with torch.no_grad():
            w32 = self.effective_weight()
            tau = float(self.tau(w32).double())
            w = w32.double().numpy()
        A, fshape = dense_bank(w, u.shape[2:])
        flat = u.reshape(u.shape[0], -1)
        s = (flat @ A.T).reshape(u.shape[0], *fshape)
        z = self.activation.numpy(s).reshape(u.shape[0], -1)
        return (flat - tau * z @ A).reshape(u.shape)

    @torch.no_grad()
    def verify(self, size: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
        """Numerical check of the guarantee for the current parameters, in float64:

        - the module agrees with :meth:`reference` (dense NumPy) to 1e-12 relative on random inputs;
        - the dense ``||W||^2 <= B`` for all three bounds and ``tau L ||W||^2 < 2``;
        - no growth on the dense top singular vector at amplitudes 1e-8 .. 1e4 and on random
          inputs; finite outputs (float32 module) on stress inputs (0, 1e-30, 1e30, mixed)."""
        n = size or (8 if self.dim == 2 else 24)
        shape = (n,) * self.dim
        net = copy.deepcopy(self).double()
        rng = np.random.default_rng(seed)
        amps = np.array([1e-3, 1.0, 30.0]).reshape(3, *([1] * (self.dim + 1)))
        u = rng.standard_normal((3, self.channels, *shape)) * amps
        got = net(torch.tensor(u)).numpy()
        ref = net.reference(u)
        scale = np.abs(u).reshape(3, -1).max(1).reshape(-1, *([1] * (u.ndim - 1)))
        err = float((np.abs(got - ref) / scale).max())
        cert = self.certificate(dense_grid=shape)
        nsq = cert.dense_norm_sq
        A, _ = dense_bank(net.effective_weight().numpy(), shape)
        top = np.linalg.eigh(A.T @ A)[1][:, -1].reshape(1, self.channels, *shape)
        gains = []
        for amp in (1e-8, 1e-4, 1e-2, 1.0, 1e2, 1e4):
            x = torch.tensor(amp * top)
            gains.append(float(net(x).norm() / x.norm()))
        rand = torch.tensor(rng.standard_normal((16, self.channels, *shape))
                            * 10.0 ** rng.uniform(-4, 3, (16,) + (1,) * (self.dim + 1)))
        rgain = float((net(rand).flatten(1).norm(dim=1) / rand.flatten(1).norm(dim=1)).max())
        stress = torch.tensor(np.stack([np.zeros_like(top[0]), 1e-30 * top[0], 1e30 * top[0],
                                        np.where(rng.random(top[0].shape) < 0.5, 1e30, 1e-30)]),
                              dtype=torch.float32)
        finite = bool(torch.isfinite(self(stress)).all())
        tol = 1e-12
        ok = (err <= tol and nsq <= min(cert.B1, cert.B2, cert.Gm_star) * (1 + tol)
              and cert.tau_L_dense < 2 and max(gains) <= 1 + tol and rgain <= 1 + tol and finite)
        return {"ok": bool(ok), "grid": shape, "max_rel_error_vs_dense": err, "dense_norm_sq": nsq,
                "B1": cert.B1, "B2": cert.B2, "Gm_star": cert.Gm_star, "tau_L_dense": cert.tau_L_dense,
                "max_gain_top": max(gains), "max_gain_random": rgain, "finite_on_stress": finite}

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, filters={self.filters}, size={self.size}, dim={self.dim}, "
                f"bound={self.bound}: u <- u - tau W^T Phi(W u), tau = theta 2/(L B(W)), "
                f"theta < {THETA_MAX}")


class StableResNet(nn.Module):
    """``depth`` :class:`StableBlock` s in sequence (``shared=True``: one block applied ``depth``
    times).  Each block is non-expansive, so the network is: ``||net(u)|| <= ||u||``."""

    def __init__(self, depth: int, shared: bool = False, seed: Optional[int] = None,
                 **block_options: Any) -> None:
        super().__init__()
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        self.depth, self.shared = int(depth), bool(shared)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        n = 1 if self.shared else self.depth
        self.blocks = nn.ModuleList([StableBlock(generator=gen, **block_options) for _ in range(n)])

    def block(self, i: int) -> StableBlock:
        return self.blocks[0 if self.shared else i]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        for i in range(self.depth):
            u = self.block(i)(u)
        return u

    @torch.no_grad()
    def certificate(self, dense_grid: Optional[tuple[int, ...]] = None) -> NetCertificate:
        blocks = [b.certificate(dense_grid) for b in self.blocks]
        return NetCertificate(
            statement=(f"||net(u)||_2 <= ||u||_2: {self.depth} blocks, each non-expansive "
                       f"({'one shared parameter set' if self.shared else 'own parameters'}; "
                       f"{CITATION})"),
            blocks=blocks, holds=all(b.holds for b in blocks))

    @torch.no_grad()
    def verify(self, size: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
        """:meth:`StableBlock.verify` for every parameter set, and the whole net against the
        composition of the dense references."""
        checks = [b.verify(size, seed + i) for i, b in enumerate(self.blocks)]
        n = size or (8 if self.block(0).dim == 2 else 24)
        c = self.block(0).channels
        u = np.random.default_rng(seed).standard_normal((2, c, *([n] * self.block(0).dim)))
        net = copy.deepcopy(self).double()
        ref = u
        for i in range(self.depth):
            ref = net.block(i).reference(ref)
        got = net(torch.tensor(u)).numpy()
        err = float(np.abs(got - ref).max() / np.abs(u).max())
        return {"ok": all(ch["ok"] for ch in checks) and err <= 1e-12,
                "max_rel_error_vs_dense": err, "blocks": checks}
