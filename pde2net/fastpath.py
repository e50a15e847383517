"""The CPU fast path of ``compile=True``: the whole explicit time loop in one generated C++ kernel.

For the explicit scheme ``u <- u - tau D^T Phi(D u)`` with the two-point difference
``(D u)_j = w0 u_j + w1 u_(j+1)`` along each axis, the kernel keeps the field in a buffer with one
ghost cell on every side (ghost-cell state), so the stencil over the interior has no index tests;
the boundary is an edge copy per step (docs/theory.md §12 for dirichlet):

- neumann:   ghosts copy the edge (u_-1 = u_0, u_N = u_(N-1)), so the differences across the edge
  are exactly zero (w1 = -w0), and the fluxes there are set to zero (D's zero rows);
- periodic:  ghosts wrap (u_-1 = u_(N-1), u_N = u_0);
- dirichlet: ghosts are zero on every side, the flux points are -1 .. N-1 (D is (N+1) x N; in 2D
  both gradient channels live on the (H+1) x (W+1) grid of flux points, so g(vx^2 + vy^2)
  couples the two differences at the same point).

Several steps run per call over two preallocated buffers, with the loop over steps in C
(``torch.get_num_threads()`` threads, ``std::thread``: nothing spin-waits between calls).  Each
thread runs every step of its own rows (1D) or images (2D), which stay in its cache (no barrier
per step); only images of at least ``Kernel.split_min`` points in a batch the threads would split
unevenly (not a multiple of the threads, fewer than twice as many) have the rows of each step
shared, with two barriers a step.  In 2D a row of fluxes is computed once into a line buffer (one
g per flux point), then the divergence; in 1D the fluxes of a chunk of 512 points.

The kernel is built with g++ on first use and cached per user (``~/.cache/pde2net/fastpath``,
or ``$PDE2NET_CACHE``).  It computes the same operations as the eager module, in another order
(fused multiply-adds), so the two agree to round-off; :func:`accelerate` checks that on a small
probe before it installs the kernel, and leaves the network to the ordinary compiled step when
they do not agree or when anything is missing (no compiler, an unsupported stencil or scheme, a
trainable network).  Calls that need gradients, or inputs on another device or of another dtype,
run the ordinary (compiled) block; :func:`reference_step` is the same ghost-cell mathematics in
torch, the reference the kernel is tested against.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import exprs
from .lower import Architecture, Explicit

BOUNDARIES = {"neumann": 0, "periodic": 1, "dirichlet": 2}
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-pthread", "-shared", "-fPIC", "-std=c++20",
         "-fno-math-errno")
_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}


class Unsupported(Exception):
    """The network is outside what the kernel handles (the caller falls back)."""


# ----------------------------------------------------------------------------- the IR
def kernel_plan(arch: Architecture) -> dict:
    """What the kernel needs from the IR: dimension, boundary, the two weights (shared by the
    axes), tau and the flux op tree with its field variable and params.  Raises
    :class:`Unsupported` for anything else."""
    if not isinstance(arch.scheme, Explicit):
        raise Unsupported(f"scheme {type(arch.scheme).__name__} (the kernel runs explicit steps)")
    ndim = len(arch.dims)
    if ndim not in (1, 2) or len(arch.stencils) != ndim:
        raise Unsupported(f"{ndim}D")
    weights, boundaries = set(), set()
    for ir in arch.stencils:
        st = ir.stencil
        if len(st.scaled) != 2 or st.offset != 0:
            raise Unsupported(f"stencil {st.describe()} (the kernel runs two-point forward differences)")
        weights.add(tuple(float(w) for w in st.scaled))
        boundaries.add(ir.boundary)
    if len(weights) != 1 or len(boundaries) != 1:
        raise Unsupported("different stencils or boundaries per axis")
    (w0, w1), = weights
    boundary, = boundaries
    if boundary not in BOUNDARIES:
        raise Unsupported(f"boundary {boundary}")
    if w1 != -w0:
        raise Unsupported("weights that do not sum to zero")
    op = arch.flux.op if ndim == 1 else arch.flux.radial_op
    if op is None:
        raise Unsupported("no radial diffusivity g(s2)")
    params = dict(arch.flux.params)
    fields = sorted(exprs.variables(op) - set(params))
    if len(fields) > 1:
        raise Unsupported(f"flux variables {fields}")
    return {"ndim": ndim, "boundary": boundary, "w": (w0, w1), "steps": arch.scheme.steps,
            "tau": arch.scheme.tau, "op": op, "var": fields[0] if fields else "",
            "params": params, "stencils": arch.stencils}



def scaled_update_weights(plan: dict) -> tuple[float, float]:
    """``tau * w0, tau * w1`` formed exactly and rounded once (the eager module's W2 = tau W1)."""
    ir = plan["stencils"][0]
    tau = plan["tau"]
    return tuple(float(tau * w) for w in ir.stencil.scaled)  # type: ignore[return-value]


# --------------------------------------------------------------------------- C++ source
_C_UNARY = {"exp": "std::exp", "log": "std::log", "abs": "std::abs", "tanh": "std::tanh",
            "sin": "std::sin", "cos": "std::cos", "atan": "std::atan", "sqrt": "std::sqrt"}


def c_expr(op: exprs.Op, var: str, params: list[str]) -> str:
    """C++ for the op tree in the element type ``T``; ``var`` is the field, params read ``P[k]``.
    Subtrees free of the field are computed in double and rounded once (hoisted by the compiler),
    as the eager module computes scalar arithmetic in Python floats."""
    if var not in exprs.variables(op):
        return f"((T)({_c(op, var, params, 'double')}))"
    return _c(op, var, params, "T")


def _c(op: exprs.Op, var: str, params: list[str], typ: str) -> str:
    k = op.kind
    if k == "const":
        return f"({typ})({float(op.value)!r})"
    if k == "var":
        return "x" if op.name == var else f"({typ})P[{params.index(op.name)}]"
    sub = [c_expr(a, var, params) if typ == "T" else _c(a, var, params, typ) for a in op.args]
    if k in ("add", "mul"):
        return "(" + (" + " if k == "add" else " * ").join(sub) + ")"
    if k == "div":
        return f"({sub[0]} / {sub[1]})"
    if k == "neg":
        return f"(-{sub[0]})"
    if k == "pow":
        if len(sub) == 2:
            return f"std::pow({sub[0]}, {sub[1]})"
        e = op.value
        if isinstance(e, int) and 1 <= e <= 4:
            return "(" + " * ".join([sub[0]] * e) + ")"
        return f"std::pow({sub[0]}, ({typ})({float(e)!r}))"
    if k == "rsqrt":
        return f"(({typ})1 / std::sqrt({sub[0]}))"
    if k in ("min", "max"):  # NumPy/torch semantics: nan if either is nan
        return f"pick_{k}({sub[0]}, {sub[1]})"
    if k in _C_UNARY:
        return f"{_C_UNARY[k]}({sub[0]})"
    raise Unsupported(f"op {k}")


_TEMPLATE = r"""
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <thread>
#include <barrier>

template <typename T> static inline T pick_min(T a, T b) { return (a != a || b != b) ? a + b : (a < b ? a : b); }
template <typename T> static inline T pick_max(T a, T b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }

template <typename T> static inline T flux_fn(T x, const double* P) { return @FLUX@; }

// the params copied into a local array of each thread: a double* argument may alias the double
// arrays the loops store to, and the compiler would then reload the params and recompute their
// scalar subexpressions (a division) at every point (measured: float64 4x the float32 time)
constexpr int NPARAMS = @NPARAMS@;
#define LOCAL_PARAMS(P) double P##_local[NPARAMS > 0 ? NPARAMS : 1] = {0}; \
    for (int i_ = 0; i_ < NPARAMS; ++i_) P##_local[i_] = P[i_]; \
    const double* P = P##_local

constexpr int64_t CHUNK = 512;

// ---- 1D: rows of n points, padded row p[0..n+1], p[1+j] = u_j
template <typename T> static inline void ghost1(T* p, int64_t n, int bc) {
    if (bc == 0) { p[0] = p[1]; p[n + 1] = p[n]; }
    else if (bc == 1) { p[0] = p[n]; p[n + 1] = p[1]; }
    else { p[0] = 0; p[n + 1] = 0; }
}

template <typename T> static void row_steps(const T* src, T* row, int64_t n, int64_t steps, int bc, T w0, T w1,
                                            T c0, T c1, const double* P, T* a, T* b, T* f) {
    // a, b: padded rows (n + 2); f: the fluxes of a chunk of points j0 - 1 .. j0 + m - 1
    std::memcpy(a + 1, src, sizeof(T) * n);
    for (int64_t s = 0; s < steps; ++s) {
        ghost1(a, n, bc);
        // in chunks, so the fluxes stay in L1 between the two loops (one flux per chunk is
        // computed twice)
        for (int64_t j0 = 0; j0 < n; j0 += CHUNK) {
            const int64_t m = std::min<int64_t>(CHUNK, n - j0);
            const T* aj = a + j0;
            #pragma omp simd
            for (int64_t k = 0; k <= m; ++k) { T x = w0 * aj[k] + w1 * aj[k + 1]; f[k] = flux_fn<T>(x, P); }
            if (bc == 0 && j0 == 0) f[0] = 0;
            if (bc == 0 && j0 + m == n) f[m] = 0;
            T* bj = b + j0 + 1;
            #pragma omp simd
            for (int64_t k = 0; k < m; ++k) bj[k] = aj[k + 1] - (c0 * f[k + 1] + c1 * f[k]);
        }
        std::swap(a, b);
    }
    std::memcpy(row, a + 1, sizeof(T) * n);
}

// the threads: std::thread, joined (no OpenMP pool spinning between calls; on a loaded machine a
// spinning pool thread took the core its sibling needed: 1D measured 40x slower at 2 threads)
template <typename F> static void parallel(int threads, F body) {
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(body, t);
    body(0);
    for (auto& th : pool) th.join();
}

template <typename T> static void run1d(const T* src, T* u, int64_t rows, int64_t n, int64_t steps, int bc,
                                        double w0, double w1, double c0, double c1, const double* P,
                                        int threads) {
    threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, rows));
    parallel(threads, [&](int t) {
        LOCAL_PARAMS(P);
        std::vector<T> a(n + 2), b(n + 2), f(std::min<int64_t>(n, CHUNK) + 1);
        for (int64_t r = rows * t / threads; r < rows * (t + 1) / threads; ++r)
            row_steps<T>(src + r * n, u + r * n, n, steps, bc, (T)w0, (T)w1, (T)c0, (T)c1, P, a.data(), b.data(), f.data());
    });
}

// ---- 2D: images h x w, padded image (h + 2) x (w + 2), q[(1 + i) * pw + 1 + j] = u_ij
template <typename T> static void ghost2(T* q, int64_t h, int64_t w, int bc) {
    const int64_t pw = w + 2;
    for (int64_t i = 1; i <= h; ++i) {
        T* r = q + i * pw;
        if (bc == 0) { r[0] = r[1]; r[w + 1] = r[w]; }
        else if (bc == 1) { r[0] = r[w]; r[w + 1] = r[1]; }
        else { r[0] = 0; r[w + 1] = 0; }
    }
    T* top = q; T* bot = q + (h + 1) * pw;
    if (bc == 0) { std::memcpy(top, q + pw, sizeof(T) * pw); std::memcpy(bot, q + h * pw, sizeof(T) * pw); }
    else if (bc == 1) { std::memcpy(top, q + h * pw, sizeof(T) * pw); std::memcpy(bot, q + pw, sizeof(T) * pw); }
    else { std::memset(top, 0, sizeof(T) * pw); std::memset(bot, 0, sizeof(T) * pw); }
}

// fluxes of padded row i (-1 .. h-1) at the points j = -1 .. w-1 (index j + 1)
template <typename T> static inline void flux_row(const T* q, int64_t i, int64_t h, int64_t w, int bc,
                                                  T w0, T w1, const double* P, T* fx, T* fy) {
    const int64_t pw = w + 2;
    const T* cur = q + (i + 1) * pw; const T* nxt = cur + pw;
    #pragma omp simd
    for (int64_t j = 0; j <= w; ++j) {
        T vx = w0 * cur[j] + w1 * cur[j + 1];
        T vy = w0 * cur[j] + w1 * nxt[j];
        T x = vx * vx + vy * vy;
        T g = flux_fn<T>(x, P);
        fx[j] = g * vx; fy[j] = g * vy;
    }
    if (bc == 0) {
        fx[0] = 0; fx[w] = 0;
        if (i == -1 || i == h - 1) std::memset(fy, 0, sizeof(T) * (w + 1));
    }
}

// rows [i0, i1) of one step from padded a into padded b
template <typename T> static void rows2d(const T* a, T* b, int64_t h, int64_t w, int64_t i0, int64_t i1, int bc,
                                         T w0, T w1, T c0, T c1, const double* P, T* fx, T* fy, T* fyp) {
    const int64_t pw = w + 2;
    flux_row<T>(a, i0 - 1, h, w, bc, w0, w1, P, fx, fyp);
    for (int64_t i = i0; i < i1; ++i) {
        flux_row<T>(a, i, h, w, bc, w0, w1, P, fx, fy);
        const T* ar = a + (i + 1) * pw + 1; T* br = b + (i + 1) * pw + 1;
        #pragma omp simd
        for (int64_t j = 0; j < w; ++j)
            br[j] = ar[j] - ((c0 * fx[j + 1] + c1 * fx[j]) + (c0 * fy[j + 1] + c1 * fyp[j + 1]));
        std::swap(fy, fyp);
    }
}

template <typename T> static void pad_in(const T* u, T* q, int64_t h, int64_t w) {
    for (int64_t i = 0; i < h; ++i) std::memcpy(q + (i + 1) * (w + 2) + 1, u + i * w, sizeof(T) * w);
}
template <typename T> static void pad_out(const T* q, T* u, int64_t h, int64_t w) {
    for (int64_t i = 0; i < h; ++i) std::memcpy(u + i * w, q + (i + 1) * (w + 2) + 1, sizeof(T) * w);
}

template <typename T> static void run2d(const T* src, T* u, int64_t imgs, int64_t h, int64_t w, int64_t steps, int bc,
                                        double w0_, double w1_, double c0_, double c1_, const double* P,
                                        int threads, T* bufa, T* bufb, int64_t split_min) {
    const T w0 = (T)w0_, w1 = (T)w1_, c0 = (T)c0_, c1 = (T)c1_;
    const int64_t plane = (h + 2) * (w + 2);
    // rows of a step shared by the threads (two barriers per step) only for a batch the threads
    // do not divide and images of at least split_min points: on a loaded machine a barrier can
    // cost a scheduler time slice, more than a small image's step
    bool by_image = imgs % threads == 0 || imgs >= 2 * threads || h * w < split_min;
    if (by_image) threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, imgs));
    else threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, h));
    if (by_image) {  // every step of an image on one thread: no barrier per step
        parallel(threads, [&](int t) {
            LOCAL_PARAMS(P);
            std::vector<T> lines(3 * (w + 1));
            T* fx = lines.data(); T* fy = fx + (w + 1); T* fyp = fy + (w + 1);
            for (int64_t k = imgs * t / threads; k < imgs * (t + 1) / threads; ++k) {
                T* a = bufa + k * plane; T* b = bufb + k * plane;
                pad_in<T>(src + k * h * w, a, h, w);
                for (int64_t s = 0; s < steps; ++s) {
                    ghost2<T>(a, h, w, bc);
                    rows2d<T>(a, b, h, w, 0, h, bc, w0, w1, c0, c1, P, fx, fy, fyp);
                    std::swap(a, b);
                }
                pad_out<T>(a, u + k * h * w, h, w);
            }
        });
        return;
    }
    // the threads share the rows of every step (a batch they do not divide)
    std::barrier sync(threads);
    parallel(threads, [&](int t) {
        LOCAL_PARAMS(P);
        std::vector<T> lines(3 * (w + 1));
        T* fx = lines.data(); T* fy = fx + (w + 1); T* fyp = fy + (w + 1);
        const int64_t i0 = h * t / threads, i1 = h * (t + 1) / threads;
        for (int64_t k = 0; k < imgs; ++k) {
            T* a = bufa + k * plane; T* b = bufb + k * plane;
            if (t == 0) pad_in<T>(src + k * h * w, a, h, w);
            for (int64_t s = 0; s < steps; ++s) {
                if (t == 0) ghost2<T>(a, h, w, bc);
                sync.arrive_and_wait();
                rows2d<T>(a, b, h, w, i0, i1, bc, w0, w1, c0, c1, P, fx, fy, fyp);
                sync.arrive_and_wait();
                std::swap(a, b);
            }
            if (t == 0) pad_out<T>(a, u + k * h * w, h, w);
            sync.arrive_and_wait();
        }
    });
}

extern "C" {
void pde2net_run1d_f32(const float* src, float* u, int64_t rows, int64_t n, int64_t steps, int bc, double w0,
                       double w1, double c0, double c1, const double* P, int threads) {
    run1d<float>(src, u, rows, n, steps, bc, w0, w1, c0, c1, P, threads); }
void pde2net_run1d_f64(const double* src, double* u, int64_t rows, int64_t n, int64_t steps, int bc, double w0,
                       double w1, double c0, double c1, const double* P, int threads) {
    run1d<double>(src, u, rows, n, steps, bc, w0, w1, c0, c1, P, threads); }
void pde2net_run2d_f32(const float* src, float* u, int64_t imgs, int64_t h, int64_t w, int64_t steps, int bc,
                       double w0, double w1, double c0, double c1, const double* P, int threads, float* a,
                       float* b, int64_t split_min) {
    run2d<float>(src, u, imgs, h, w, steps, bc, w0, w1, c0, c1, P, threads, a, b, split_min); }
void pde2net_run2d_f64(const double* src, double* u, int64_t imgs, int64_t h, int64_t w, int64_t steps, int bc,
                       double w0, double w1, double c0, double c1, const double* P, int threads, double* a,
                       double* b, int64_t split_min) {
    run2d<double>(src, u, imgs, h, w, steps, bc, w0, w1, c0, c1, P, threads, a, b, split_min); }
}
"""


def kernel_source(plan: dict) -> str:
    """The C++ translation unit for the plan's flux (boundary, weights and params are arguments,
    so one build serves every boundary, time step and param value of the same flux)."""
    return _TEMPLATE.replace("@FLUX@", c_expr(plan["op"], plan["var"], sorted(plan["params"]))).replace(
        "@NPARAMS@", str(len(plan["params"])))


# ------------------------------------------------------------------------------- build
def cache_dir() -> Path:
    """The kernel cache: ``$PDE2NET_CACHE/fastpath`` or ``~/.cache/pde2net/fastpath``, created
    private (0700).  Kernels are shared objects that get loaded into the process, so a directory
    that another user owns or can write to is refused (the network then keeps its compiled step),
    as the parser's table cache refuses one."""
    root = os.environ.get("PDE2NET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pde2net")
    path = Path(root) / "fastpath"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise Unsupported(f"the kernel cache {path} is not private to this user (owner and mode "
                          f"0700 needed): not loading compiled code from it")
    return path


def build(source: str) -> tuple[Any, float]:
    """Compiles (or loads from the cache) the source; returns the library and the seconds spent
    compiling (0 on a cache hit)."""
    key = hashlib.sha256((source + " ".join(FLAGS) + _cpu_id()).encode()).hexdigest()[:20]
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key], 0.0
        path = cache_dir() / f"k{key}.so"
        seconds = 0.0
        if not path.exists():
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                src = Path(tmp) / "kernel.cpp"
                src.write_text(source)
                out = Path(tmp) / "kernel.so"
                proc = subprocess.run(["g++", *FLAGS, str(src), "-o", str(out)],
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise Unsupported(f"g++ failed: {proc.stderr[-2000:]}")
                os.replace(out, path)  # atomic: concurrent builds leave one complete file
            seconds = time.perf_counter() - start
        lib = ctypes.CDLL(str(path))
        _declare(lib)
        _LOADED[key] = lib
        return lib, seconds


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _declare(lib) -> None:
    i64, i32, dbl, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
    for t in ("f32", "f64"):
        f = getattr(lib, f"pde2net_run1d_{t}")
        f.argtypes = [ptr, ptr, i64, i64, i64, i32, dbl, dbl, dbl, dbl, ptr, i32]
        f.restype = None
        f = getattr(lib, f"pde2net_run2d_{t}")
        f.argtypes = [ptr, ptr, i64, i64, i64, i64, i32, dbl, dbl, dbl, dbl, ptr, i32, ptr, ptr, i64]
        f.restype = None


# ------------------------------------------------------------------------------ kernel
class Kernel:
    """``steps`` explicit steps of the plan, in place on a contiguous CPU float32/float64 copy."""

    DTYPES = {torch.float32: "f32", torch.float64: "f64"}
    split_min = 1 << 16  # 2D: the fewest points per image for which the threads share its rows

    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.lib, self.compile_seconds = build(kernel_source(plan))
        self.bc = BOUNDARIES[plan["boundary"]]
        self.w = plan["w"]
        self.c = scaled_update_weights(plan)
        self.params = (ctypes.c_double * max(1, len(plan["params"])))(
            *[float(plan["params"][k]) for k in sorted(plan["params"])])
        self._buffers: dict = {}
        self._lock = threading.Lock()  # the buffers are shared: one call at a time (ctypes drops the GIL)

    def accepts(self, u: torch.Tensor) -> bool:
        return u.device.type == "cpu" and u.dtype in self.DTYPES and not u.requires_grad

    def __call__(self, u: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` steps from ``u`` (rows ``(B, N)`` in 1D, images ``(B, H, W)`` in 2D); a new tensor."""
        src = u.detach().contiguous()
        if steps <= 0 or src.numel() == 0:
            return src.clone()
        # torch.empty, not clone: a parallel torch copy leaves torch's OpenMP threads spinning,
        # and on two cores they take the time of the kernel's own threads
        out = torch.empty(src.shape, dtype=src.dtype)
        t = self.DTYPES[out.dtype]
        threads = max(1, torch.get_num_threads())
        w0, w1 = self.w
        c0, c1 = self.c
        if self.plan["ndim"] == 1:
            rows, n = out.shape
            getattr(self.lib, f"pde2net_run1d_{t}")(src.data_ptr(), out.data_ptr(), rows, n, steps,
                                                    self.bc, w0, w1, c0, c1, self.params, threads)
        else:
            imgs, h, w = out.shape
            with self._lock:
                a, b = self._pair(out.dtype, imgs * (h + 2) * (w + 2))
                getattr(self.lib, f"pde2net_run2d_{t}")(src.data_ptr(), out.data_ptr(), imgs, h, w, steps,
                                                        self.bc, w0, w1, c0, c1, self.params, threads,
                                                        a.data_ptr(), b.data_ptr(), self.split_min)
        return out

    def _pair(self, dtype: torch.dtype, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two padded buffers, kept between calls (allocated once per shape and dtype)."""
        key = (dtype, numel)
        if key not in self._buffers:
            self._buffers.clear()
            self._buffers[key] = (torch.empty(numel, dtype=dtype), torch.empty(numel, dtype=dtype))
        return self._buffers[key]


# ---------------------------------------------------------------------- torch reference
def reference_step(plan: dict, u: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """The kernel's mathematics in torch (differentiable): ghost cells per boundary, fluxes at
    the points -1 .. N-1 of every axis, the divergence ``c0 f_j + c1 f_(j-1)``."""
    lib = exprs.LIBS["torch"]()
    w0, w1 = plan["w"]
    c0, c1 = scaled_update_weights(plan)
    bc = plan["boundary"]

    def phi(x):
        env = {plan["var"]: x, **plan["params"]} if plan["var"] else dict(plan["params"])
        y = exprs.evaluate(plan["op"], env, lib)
        return y if isinstance(y, torch.Tensor) and y.shape == x.shape else y + torch.zeros_like(x)

    for _ in range(steps):
        p = _ghosts(u, bc, plan["ndim"])
        if plan["ndim"] == 1:
            f = phi(w0 * p[..., :-1] + w1 * p[..., 1:])  # points -1 .. N-1
            if bc == "neumann":
                f = torch.cat([torch.zeros_like(f[..., :1]), f[..., 1:-1], torch.zeros_like(f[..., :1])], -1)
            u = u - (c0 * f[..., 1:] + c1 * f[..., :-1])
            continue
        vx = w0 * p[..., :-1, :-1] + w1 * p[..., :-1, 1:]  # (H+1) x (W+1): points (-1..H-1, -1..W-1)
        vy = w0 * p[..., :-1, :-1] + w1 * p[..., 1:, :-1]
        g = phi(vx * vx + vy * vy)
        fx, fy = g * vx, g * vy
        if bc == "neumann":
            fx = fx.clone()
            fy = fy.clone()
            fx[..., :, 0] = 0
            fx[..., :, -1] = 0
            fy[..., 0, :] = 0
            fy[..., -1, :] = 0
        div = (c0 * fx[..., 1:, 1:] + c1 * fx[..., 1:, :-1]) + (c0 * fy[..., 1:, 1:] + c1 * fy[..., :-1, 1:])
        u = u - div
    return u


def _ghosts(u: torch.Tensor, bc: str, ndim: int) -> torch.Tensor:
    """One ghost cell on each side of the last ``ndim`` axes."""
    for dim in range(-ndim, 0):
        n = u.shape[dim]
        if bc == "neumann":
            lo, hi = u.narrow(dim, 0, 1), u.narrow(dim, n - 1, 1)
        elif bc == "periodic":
            lo, hi = u.narrow(dim, n - 1, 1), u.narrow(dim, 0, 1)
        else:
            lo = hi = torch.zeros_like(u.narrow(dim, 0, 1))
        u = torch.cat([lo, u, hi], dim)
    return u


# ------------------------------------------------------------------------- the network
class FastForward:
    """``net.forward`` with the kernel: ``forward(u, steps=None)`` as the network's own, running
    the whole time loop in C when no gradient is wanted and the input is a CPU float32/float64
    tensor; otherwise the network's (compiled) block, step by step."""

    def __init__(self, net: torch.nn.Module, kernel: Kernel, fallback: Callable) -> None:
        self.net, self.kernel, self.fallback = net, kernel, fallback
        self.tau = net.tau

    def __call__(self, u: torch.Tensor, steps: Optional[int] = None) -> torch.Tensor:
        if self.net.tau is not self.tau:  # a new time step: W2 = tau W1 rounded again
            self.kernel.c = scaled_update_weights({**self.kernel.plan, "tau": self.net.tau})
            self.tau = self.net.tau
        rows = self.net._rows(u)
        n = self.net.steps if steps is None else steps
        needs_grad = torch.is_grad_enabled() and (u.requires_grad or any(
            p.requires_grad for p in self.net.parameters()))
        if needs_grad or not self.kernel.accepts(rows):
            return self.fallback(u, steps)
        return self.kernel(rows, n).reshape(u.shape)


def accelerate(net: torch.nn.Module) -> Optional[str]:
    """Installs the kernel as ``net.forward`` when the network is an explicit scheme the kernel
    runs and the kernel agrees with the eager block on a probe; returns None then, else the reason
    the network keeps the ordinary compiled step.  ``net.fastpath_compile_seconds`` records the
    build time (0 on a cache hit)."""
    arch = getattr(net, "arch", None)
    if arch is None or list(net.parameters()) or not callable(getattr(net, "_rows", None)):
        return "not a frozen pde2net network"
    if type(net).forward is not _explicit_forward():
        return "not the explicit network"
    try:
        plan = kernel_plan(arch)
        kernel = Kernel(plan)
    except (Unsupported, OSError, subprocess.SubprocessError, AttributeError) as exc:
        return str(exc)
    why = probe(net, kernel)
    if why is not None:
        return why
    net.fastpath_compile_seconds = kernel.compile_seconds
    net.fastpath = kernel
    net.forward = FastForward(net, kernel, type(net).forward.__get__(net))
    return None


def _explicit_forward():
    from .layers import DiffusionNet

    return DiffusionNet.forward


def probe(net: torch.nn.Module, kernel: Kernel) -> Optional[str]:
    """Two steps of the kernel and of the eager block on a small random float64 input (odd sizes,
    a batch the threads do not divide): None when they agree to round-off."""
    ndim = kernel.plan["ndim"]
    n = max(7, getattr(net, "min_points", 1) + 4)
    gen = torch.Generator().manual_seed(0)
    shape = (3, n) if ndim == 1 else (3, n, n + 2)
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want = u
        for _ in range(2):
            want = net.block(want)
        got = kernel(u, 2)
    if not torch.allclose(got, want, rtol=1e-10, atol=1e-12):
        return (f"the kernel and the eager block disagree on a probe (max difference "
                f"{(got - want).abs().max().item():.3g})")
    return None
