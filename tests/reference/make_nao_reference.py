#!/usr/bin/env python3
"""NAO (norm-aware optimisation) reference: seed paths and centroids, the spec fpi's Rust NAO is tested against.

    .venv-ref/bin/python tests/reference/make_nao_reference.py            # writes the two fixture files below
    .venv-ref/bin/python tests/reference/make_nao_reference.py --no-16384 # quick run: skip the d = 16384 cases
    .venv-ref/bin/python tests/reference/make_nao_reference.py --out /tmp/nao.safetensors --cases-out /tmp/nao.json
    .venv-ref/bin/python tests/reference/make_nao_reference.py --centroid-eps seeds   # authors' centroid eps rule
    .venv-ref/bin/python tests/reference/make_nao_reference.py --no-converged --no-authors   # spec cases only

~40 s on 2 CPU cores (about half of it the information-only runs that --no-converged / --no-authors skip).

Writes tests/fixtures/reference/nao.safetensors and tests/fixtures/nao-cases.json. CPU, offline, float64, one
thread, seeded (numpy PCG64): a rerun gives byte-identical files. Needs torch, numpy, safetensors.

NAO is Samuel et al., "Norm-guided latent space exploration for text-to-image generation" (NeurIPS 2023); the
authors' code is github.com/dvirsamuel/SeedSelect, `nao/norm_aware_optimization.py` (HEAD 55b6157, cited below as
NAO:line) and `main.py` (cited as MAIN:line). This file is an independent implementation of the same objective and
optimiser loop, written out so that each step can be ported one to one.

SPEC (what this script computes; fpi implements this)
====

d = dimension, x in R^d.

  g(r, d) = (d-1) ln r - r^2/2 - [(d/2 - 1) ln 2 + lgamma(d/2)]      chi_d log-density, in float64, constant kept
  g'(r)   = (d-1)/r - r

  lerp(a, b, t)  = (1-t) a + t b
  slerp(a, b, t) : cos = sum(a*b) / (|a| |b|)  (float64);  if |cos| > 0.9995 -> lerp(a, b, t)  (strict >)
                   else th = arccos(cos); s0 = sin(th - t th)/sin th; s1 = sin(t th)/sin th; s0 a + s1 b
                   (the raw, un-normalised vectors are combined)

Path (a -> b, n points including both endpoints, m = n-2 interior points x_1..x_m, x_0 = a, x_{n-1} = b fixed):
  L_j   = |x_{j+1} - x_j|,   rho_j = |(x_j + x_{j+1})/2|,   j = 0..n-2   (all n-1 segments, incl. the end ones)
  eps   = 2 |a - b| / n,     lambda = 1
  J(x)  = - sum_j L_j g(rho_j) + lambda sum_j max(0, L_j - eps)
  init  : x_k = a + (k/(n-1)) (b - a) + u_k,  u_k ~ U[0, 0.01)^d iid (seeded; stored in the fixture as float32,
          the optimisation starts from exactly those float32 values)
  optimiser: Adam(lr 0.01) on the m x d interior points, tol 1e-3, patience 10, at most 10 000 iterations.

Centroid of K seeds s_1..s_K (n points per path including both endpoints: the seed and the centroid c):
  path i runs s_i -> c with n-2 interior points; c is shared and optimised too.
  c0    = slerp(s_1, s_2, 0.5) for K = 2, else the mean (1/K) sum s_i; rounded to float32 and stored
  init  : path i = chord s_i -> c0 plus U[0, 0.01) noise as above (stored)
  eps_i = 2 |s_i - c0| / n   (per path, from the INITIAL centroid, constant during the optimisation)
  J     = sum_i J_path_i(s_i -> c; eps_i) - g(|c|)
  optimiser: Adam(lr 0.01) on all K paths and c, tol 1e-2, patience 5, at most 10 000 iterations.

Closed-form centroid baselines: normalised mean sum_i s_i / sqrt(K); shell-projected mean sqrt(d-1) xbar/|xbar|.

Adam (= torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8, no weight decay, no amsgrad), per parameter
element, step counter t starting at 1:
  m = b1 m + (1-b1) gr;  v = b2 v + (1-b2) gr^2
  p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + 1e-8)
(the 1e-8 is added AFTER dividing sqrt(v) by sqrt(1 - b2^t), as torch does). All parameters (every interior point,
and c) share one step counter. The script checks that its Adam matches torch.optim.Adam.

Loop (NAO:45-61 / NAO:87-114), iteration i = 0, 1, ..., max_iter-1:
  1. loss_i = J(params)                      (the objective at the CURRENT params, before this iteration's step)
  2. grad = dJ/dparams at the same params; Adam step (t = i+1)
  3. if |loss_{i-1} - loss_i| < tol then count += 1 else count = 0     (loss_{-1} = +inf, so i = 0 never counts)
  4. if count == patience: stop
  iterations = number of Adam steps taken (i+1 when stopped at i, else max_iter). The returned params are the ones
  AFTER the last step (the stopping test sees only pre-step losses; the final params were never scored in-loop).

DIFFERENCES between the issue (followed here) and the authors' code
===========

 1. eps for centroid paths. MAIN:172 uses eps = 2|p1 - p2| / n_points, the distance between the two SEEDS, shared
    by both paths (and only defined for K = 2, MAIN:162-163). Here: the issue's eps = 2|a - b|/n applied to each
    path's own endpoints at the start, eps_i = 2|s_i - c0|/n. `--centroid-eps seeds` gives the authors' rule
    (2|s_1 - s_2|/n, shared; for K = 3 still the first two seeds).
 2. Noise. NAO:33 adds torch.rand(...)/100 (U[0, 0.01), unseeded CUDA generator) to all n chord points, then drops
    the endpoints (NAO:34). Here: the same distribution from a seeded numpy PCG64, only for the interior points,
    and the result is stored (the Rust test does not regenerate it).
 3. Precision. The authors run in float32 throughout, including g (MAIN:175-176: float32 log, float32
    lgamma(d/2) and log 2; at d = 16384 g ~ -0.6 is the difference of ~8e4-sized float32 terms, so it is off by
    ~1e-2 per term and the float32 loss jitters by more than tol). Here: float64 parameters, float64 g with the
    constant from math.lgamma; the float32 initial values are the starting point. The "authors" variant in the
    fixture (see below) reproduces their float32 arithmetic and uses torch.optim.Adam.
 4. Points per centroid path. MAIN:167 uses n_points = 50 per path INCLUDING the seed and the centroid (NAO:31,34),
    i.e. 48 interior points per path. The issue does not fix it; here n (default 9) per path, including both
    endpoints, n - 2 interior points per path, the same convention as for a plain path.
 5. The authors' objective: the first commit (ad9037b, NAO:9 there) measured the first segment to path[1] instead
    of path[0] (a bug); HEAD 55b6157 ("add missing points to optimization") fixed it. This follows HEAD.
 6. The authors' slerp (MAIN:18-40) runs in the inputs' dtype (float32 numpy) and sums the elementwise
    v0*v1/(|v0||v1|); here float64 sum(a*b)/(|a||b|). Same formula, threshold and fallback.
 7. The authors' centroid has a fallback for an all-zero initial centroid (NAO:75-76: replace by rand/100); not
    reproduced (cannot happen for random seeds).
 8. Same as the authors: lr 0.01 (NAO:41,82), lambda 1 (NAO:42,84), tol/patience 1e-3/10 for paths (NAO:38,60) and
    1e-2/5 for centroids (NAO:70,113), 10 000 iterations (NAO:45,87), the penalty and the line integral over all n-1
    segments including the two touching fixed endpoints (NAO:9-22), centroid loss -sum LI - g(|c|) + lambda sum P
    (NAO:101), c0 = slerp midpoint for K = 2 (MAIN:177) or the mean (NAO:74), the stopping test after the step on
    the pre-step loss (NAO:46-61). The authors' midpoint is path/2 + path/2 (NAO:14-16), here (x + y)/2 (ulps).

CASES (seed 0; names as in nao-cases.json, which also holds every parameter and the summary numbers)
=====
  path_d256_n5, path_d256_n9, path_d1024_n5, path_d1024_n9, path_d16384_n9: seeds a, b ~ N(0, I_d)
  centroid_d1024_k2 (c0 = slerp), centroid_d1024_k3 (c0 = mean): n = --centroid-n (9) per path
  centroid_d16384_k2: n = 5 per path (keeps the file < 3 MB)
  Randomness: numpy Generator(PCG64([seed, tag...])) per case; the fixture stores every drawn value that matters.

FIXTURE (tests/fixtures/reference/nao.safetensors; tensors float32 unless noted, scalars are 1-element tensors)
=======

g table:   g.r [M] f64, g.d [M] f64 (integer-valued), g.value [M] f64 = g(r, d), g.deriv [M] f64 = g'(r)
interp:    interp.t [T] f64;  for each pair P in generic, near_threshold, near_parallel, near_antiparallel:
           interp.P.a [D], interp.P.b [D] (f32 inputs), interp.P.cos [1] f64, interp.P.fallback [1] i64 (1 if
           |cos| > 0.9995), interp.P.lerp [T, D] f64, interp.P.slerp [T, D] f64 (computed in f64 from the f32
           inputs; row k is t = interp.t[k])
gradcheck: gradcheck.path.{a [d], b [d], x [m, d]} (f32, d = 256, n = 5), gradcheck.path.eps [1] f64,
           gradcheck.path.objective / line_integral / penalty [1] f64, gradcheck.path.grad [m, d] f64 (autograd,
           f64, at the f32 point upcast), gradcheck.path.lengths [n-1] f64.
           gradcheck.centroid.{seeds [K, d], x [K, m, d], c [d]} (f32), .eps [K] f64, .objective [1] f64,
           .grad_x [K, m, d] f64, .grad_c [d] f64   (K = 2, d = 256, n = 5)
path case C (names in nao-cases.json):
           C.a [d], C.b [d], C.init [m, d] (exact starting interior points), C.eps [1] f64,
           C.path [m, d] (final interior points), C.objective [1] f64 = J(f64(C.path)) (recomputed from the stored
           f32 path), C.last_loss [1] f64 (the in-loop loss of the last iteration, pre-step), C.iterations [1] i64,
           C.norms [m] f64 (|x_k| of the stored path), C.mid_norms [n-1] f64 (rho_j), C.lengths [n-1] f64 (L_j),
           C.init_objective [1] f64 = J(C.init), C.loss_head [<=50] f64 (in-loop losses of the first iterations,
           for step-by-step debugging), C.lerp_mid_norm [1] f64 = |(a+b)/2|, C.slerp_mid_norm [1] f64.
           Authors' variant (float32 arithmetic, torch.optim.Adam, same start): C.authors.objective [1] f64
           (J of the issue, f64, at their final point), C.authors.iterations [1] i64, C.authors.norms [m] f64,
           C.authors.last_loss [1] f64 (their float32 in-loop loss).
           C.converged_objective [1] f64: J after MAX_ITER steps with no early stop, same start (information only:
           the stopping rule halts 0-4 % above it; not part of the spec).
centroid case C:
           C.seeds [K, d], C.c_init [d], C.init [K, m, d], C.eps [K] f64, C.c [d], C.paths [K, m, d],
           C.objective, C.last_loss, C.iterations, C.init_objective, C.loss_head as above, C.norms [K, m] f64,
           C.c_norm [1] f64, C.mid_norms [K, n-1] f64, C.lengths [K, n-1] f64,
           C.mean_normalised [d], C.mean_shell [d] (closed-form baselines, from the f32 seeds in f64, rounded),
           C.authors.{objective, iterations, last_loss, c_norm, norms} as for paths (authors' eps rule 1 above).
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/reference/nao.safetensors"
CASES_OUT = ROOT / "tests/fixtures/nao-cases.json"

SLERP_DOT_THRESHOLD = 0.9995
LR = 0.01
LAMBDA = 1.0
MAX_ITER = 10_000
PATH_TOL, PATH_PATIENCE = 1e-3, 10
CENTROID_TOL, CENTROID_PATIENCE = 1e-2, 5
NOISE_SCALE = 0.01  # U[0, 1) / 100
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
LOSS_HEAD = 50


# ---------------------------------------------------------------------------------------------------------------
# chi_d log-density


def chi_log_const(d):
    """(d/2 - 1) ln 2 + lgamma(d/2), float64."""
    return (d / 2.0 - 1.0) * math.log(2.0) + math.lgamma(d / 2.0)


def g_scalar(r, d):
    return (d - 1) * math.log(r) - 0.5 * r * r - chi_log_const(d)


def g_deriv_scalar(r, d):
    return (d - 1) / r - r


def g_t(r, d):
    """g on a float64 torch tensor of norms (differentiable)."""
    return (d - 1) * torch.log(r) - 0.5 * r * r - chi_log_const(d)


def g_t_authors(r, d):
    """MAIN:175-176 in float32: float32 log, float32 lgamma(d/2), float32 log 2."""
    two = torch.tensor(2.0)
    return ((d - 1) * torch.log(r) - 0.5 * torch.pow(r, 2)) - (
        (0.5 * d - 1) * torch.log(two) + torch.lgamma(torch.tensor(d / 2)))


# ---------------------------------------------------------------------------------------------------------------
# lerp / slerp (float64 numpy)


def lerp(a, b, t):
    return (1.0 - t) * a + t * b


def slerp_cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def slerp(a, b, t):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    c = slerp_cos(a, b)
    if abs(c) > SLERP_DOT_THRESHOLD:
        return lerp(a, b, t)
    th = math.acos(c)
    s = math.sin(th)
    return (math.sin(th - t * th) / s) * a + (math.sin(t * th) / s) * b


# ---------------------------------------------------------------------------------------------------------------
# objectives (torch, differentiable)


def segments(a, x, b):
    """a [d], x [m, d], b [d] -> L [m+1], rho [m+1] over the polyline a, x_1..x_m, b."""
    pts = torch.cat([a[None], x, b[None]], 0)
    L = torch.linalg.vector_norm(pts[1:] - pts[:-1], dim=1)
    rho = torch.linalg.vector_norm((pts[1:] + pts[:-1]) * 0.5, dim=1)
    return L, rho


def path_terms(a, x, b, eps, d, g=g_t):
    """-> (line_integral, penalty); J = -line_integral + LAMBDA * penalty."""
    L, rho = segments(a, x, b)
    return (L * g(rho, d)).sum(), torch.relu(L - eps).sum()


def path_objective(a, x, b, eps, d, g=g_t):
    li, pen = path_terms(a, x, b, eps, d, g)
    return -li + LAMBDA * pen


def centroid_objective(seeds, xs, c, eps, d, g=g_t):
    """seeds [K, d], xs: list of K [m, d], c [d], eps: list of K floats."""
    total = 0.0
    for i in range(len(xs)):
        total = total + path_objective(seeds[i], xs[i], c, eps[i], d, g)
    return total - g(torch.linalg.vector_norm(c), d)


# ---------------------------------------------------------------------------------------------------------------
# optimiser


class Adam:
    """torch.optim.Adam(lr) with default betas/eps, written out; one step counter for all params."""

    def __init__(self, params, lr):
        self.params = params
        self.lr = lr
        self.t = 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        b1, b2 = ADAM_BETAS
        self.t += 1
        bc1 = 1.0 - b1 ** self.t
        bc2_sqrt = math.sqrt(1.0 - b2 ** self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            gr = p.grad
            m.mul_(b1).add_(gr, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(gr, gr, value=1.0 - b2)
            p.sub_((self.lr / bc1) * m / (v.sqrt() / bc2_sqrt + ADAM_EPS))


def run_loop(params, loss_fn, tol, patience, torch_adam=False):
    """The NAO loop. Returns (iterations, last_loss, loss_head)."""
    opt = torch.optim.Adam(params, lr=LR) if torch_adam else Adam(params, LR)
    last = math.inf
    count = 0
    head = []
    it = 0
    for i in range(MAX_ITER):
        for p in params:
            p.grad = None
        loss = loss_fn()
        loss.backward()
        opt.step()
        it = i + 1
        lv = float(loss.detach())
        if len(head) < LOSS_HEAD:
            head.append(lv)
        count = count + 1 if abs(last - lv) < tol else 0
        last = lv
        if count == patience:
            break
    return it, last, head


# ---------------------------------------------------------------------------------------------------------------
# cases


def rng_for(seed, *tag):
    return np.random.Generator(np.random.PCG64([seed, *tag]))


def normal_f32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def chord_init(rng, a, b, n):
    """Interior chord points plus U[0, 0.01) noise, computed in f64 from f32 endpoints, rounded to f32."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    k = np.arange(1, n - 1, dtype=np.float64)[:, None] / (n - 1)
    noise = rng.random((n - 2, a.shape[0])) * NOISE_SCALE
    return (a64 + k * (b64 - a64) + noise).astype(np.float32)


def t64(x):
    return torch.from_numpy(np.asarray(x, np.float64).copy())


def f64_1(v):
    return torch.tensor([float(v)], dtype=torch.float64)


def i64_1(v):
    return torch.tensor([int(v)], dtype=torch.int64)


def norms64(x):
    return np.linalg.norm(np.asarray(x, np.float64), axis=-1)


def run_path_case(name, d, n, seed, out, authors=True, converged=True):
    rng = rng_for(seed, 1, d, n)
    a = normal_f32(rng, d)
    b = normal_f32(rng, d)
    init = chord_init(rng, a, b, n)
    eps = 2.0 * float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))) / n

    A, B = t64(a), t64(b)
    x = t64(init).requires_grad_(True)
    with torch.no_grad():
        init_obj = float(path_objective(A, t64(init), B, eps, d))
    iters, last, head = run_loop([x], lambda: path_objective(A, x, B, eps, d), PATH_TOL, PATH_PATIENCE)
    final = x.detach().numpy().astype(np.float32)
    X = t64(final)
    with torch.no_grad():
        obj = float(path_objective(A, X, B, eps, d))
        L, rho = segments(A, X, B)

    p = name + "."
    out[p + "a"] = torch.from_numpy(a)
    out[p + "b"] = torch.from_numpy(b)
    out[p + "init"] = torch.from_numpy(init)
    out[p + "eps"] = f64_1(eps)
    out[p + "path"] = torch.from_numpy(final)
    out[p + "objective"] = f64_1(obj)
    out[p + "last_loss"] = f64_1(last)
    out[p + "iterations"] = i64_1(iters)
    out[p + "init_objective"] = f64_1(init_obj)
    out[p + "loss_head"] = t64(head)
    out[p + "norms"] = t64(norms64(final))
    out[p + "mid_norms"] = rho.clone()
    out[p + "lengths"] = L.clone()
    lerp_mid = float(np.linalg.norm(lerp(a.astype(np.float64), b.astype(np.float64), 0.5)))
    slerp_mid = float(np.linalg.norm(slerp(a, b, 0.5)))
    out[p + "lerp_mid_norm"] = f64_1(lerp_mid)
    out[p + "slerp_mid_norm"] = f64_1(slerp_mid)

    info = dict(name=name, kind="path", d=d, n=n, seed=seed, eps=eps, tol=PATH_TOL, patience=PATH_PATIENCE,
                iterations=iters, objective=obj, init_objective=init_obj,
                min_norm=float(norms64(final).min()), max_norm=float(norms64(final).max()),
                lerp_mid_norm=lerp_mid, slerp_mid_norm=slerp_mid)

    if converged:
        # the same start and optimiser, no early stop: MAX_ITER steps (shows how far the stopping rule is from
        # the optimum; not part of the spec)
        xc = t64(init).requires_grad_(True)
        run_loop([xc], lambda: path_objective(A, xc, B, eps, d), -1.0, PATH_PATIENCE)
        fc = xc.detach().numpy().astype(np.float32)
        with torch.no_grad():
            oc = float(path_objective(A, t64(fc), B, eps, d))
        out[p + "converged_objective"] = f64_1(oc)
        info["converged"] = dict(iterations=MAX_ITER, objective=oc, min_norm=float(norms64(fc).min()),
                                 max_norm=float(norms64(fc).max()))

    if authors:
        xa = torch.from_numpy(init.copy()).requires_grad_(True)
        Af, Bf = torch.from_numpy(a), torch.from_numpy(b)
        eps32 = torch.tensor(eps, dtype=torch.float32)
        ia, la, _ = run_loop([xa], lambda: path_objective(Af, xa, Bf, eps32, d, g_t_authors),
                             PATH_TOL, PATH_PATIENCE, torch_adam=True)
        fa = xa.detach().numpy()
        with torch.no_grad():
            oa = float(path_objective(A, t64(fa), B, eps, d))
        out[p + "authors.objective"] = f64_1(oa)
        out[p + "authors.iterations"] = i64_1(ia)
        out[p + "authors.last_loss"] = f64_1(la)
        out[p + "authors.norms"] = t64(norms64(fa))
        info["authors"] = dict(iterations=ia, objective=oa, min_norm=float(norms64(fa).min()),
                               max_norm=float(norms64(fa).max()))
    return info


def run_centroid_case(name, d, n, K, seed, out, eps_rule="path", authors=True):
    rng = rng_for(seed, 2, d, n, K)
    seeds = np.stack([normal_f32(rng, d) for _ in range(K)])
    s64 = seeds.astype(np.float64)
    if K == 2:
        c0 = slerp(s64[0], s64[1], 0.5).astype(np.float32)
        c_init_rule = "slerp"
    else:
        c0 = s64.mean(0).astype(np.float32)
        c_init_rule = "mean"
    init = np.stack([chord_init(rng, seeds[i], c0, n) for i in range(K)])
    c064 = c0.astype(np.float64)
    eps_path = [2.0 * float(np.linalg.norm(s64[i] - c064)) / n for i in range(K)]
    eps_seeds = [2.0 * float(np.linalg.norm(s64[0] - s64[1])) / n] * K
    eps = eps_path if eps_rule == "path" else eps_seeds

    S = t64(seeds)
    xs = [t64(init[i]).requires_grad_(True) for i in range(K)]
    c = t64(c0).requires_grad_(True)
    with torch.no_grad():
        init_obj = float(centroid_objective(S, [t64(init[i]) for i in range(K)], t64(c0), eps, d))
    iters, last, head = run_loop(xs + [c], lambda: centroid_objective(S, xs, c, eps, d),
                                 CENTROID_TOL, CENTROID_PATIENCE)
    paths = np.stack([x.detach().numpy() for x in xs]).astype(np.float32)
    cf = c.detach().numpy().astype(np.float32)
    Xs = [t64(paths[i]) for i in range(K)]
    C = t64(cf)
    with torch.no_grad():
        obj = float(centroid_objective(S, Xs, C, eps, d))
        segs = [segments(S[i], Xs[i], C) for i in range(K)]

    mean_norm = (s64.sum(0) / math.sqrt(K)).astype(np.float32)
    xbar = s64.mean(0)
    mean_shell = (math.sqrt(d - 1) * xbar / np.linalg.norm(xbar)).astype(np.float32)

    p = name + "."
    out[p + "seeds"] = torch.from_numpy(seeds)
    out[p + "c_init"] = torch.from_numpy(c0)
    out[p + "init"] = torch.from_numpy(init)
    out[p + "eps"] = t64(eps)
    out[p + "c"] = torch.from_numpy(cf)
    out[p + "paths"] = torch.from_numpy(paths)
    out[p + "objective"] = f64_1(obj)
    out[p + "last_loss"] = f64_1(last)
    out[p + "iterations"] = i64_1(iters)
    out[p + "init_objective"] = f64_1(init_obj)
    out[p + "loss_head"] = t64(head)
    out[p + "norms"] = t64(norms64(paths))
    out[p + "c_norm"] = f64_1(float(np.linalg.norm(cf.astype(np.float64))))
    out[p + "mid_norms"] = torch.stack([s[1] for s in segs])
    out[p + "lengths"] = torch.stack([s[0] for s in segs])
    out[p + "mean_normalised"] = torch.from_numpy(mean_norm)
    out[p + "mean_shell"] = torch.from_numpy(mean_shell)

    nr = norms64(paths)
    info = dict(name=name, kind="centroid", d=d, n=n, K=K, seed=seed, c_init=c_init_rule, eps_rule=eps_rule,
                eps=eps, tol=CENTROID_TOL, patience=CENTROID_PATIENCE, iterations=iters, objective=obj,
                init_objective=init_obj, min_norm=float(nr.min()), max_norm=float(nr.max()),
                c_norm=float(np.linalg.norm(cf.astype(np.float64))),
                c_init_norm=float(np.linalg.norm(c064)),
                mean_normalised_norm=float(np.linalg.norm(mean_norm.astype(np.float64))),
                mean_shell_norm=float(np.linalg.norm(mean_shell.astype(np.float64))))

    if authors:
        Sf = torch.from_numpy(seeds)
        xa = [torch.from_numpy(init[i].copy()).requires_grad_(True) for i in range(K)]
        ca = torch.from_numpy(c0.copy()).requires_grad_(True)
        eps32 = [torch.tensor(e, dtype=torch.float32) for e in eps_seeds]
        ia, la, _ = run_loop(xa + [ca], lambda: centroid_objective(Sf, xa, ca, eps32, d, g_t_authors),
                             CENTROID_TOL, CENTROID_PATIENCE, torch_adam=True)
        pa = np.stack([x.detach().numpy() for x in xa])
        cfa = ca.detach().numpy()
        with torch.no_grad():
            # scored with the authors' eps rule, issue's f64 objective
            oa = float(centroid_objective(S, [t64(pa[i]) for i in range(K)], t64(cfa), eps_seeds, d))
        out[p + "authors.objective"] = f64_1(oa)
        out[p + "authors.iterations"] = i64_1(ia)
        out[p + "authors.last_loss"] = f64_1(la)
        out[p + "authors.norms"] = t64(norms64(pa))
        out[p + "authors.c_norm"] = f64_1(float(np.linalg.norm(cfa.astype(np.float64))))
        info["authors"] = dict(iterations=ia, objective=oa, eps=eps_seeds, min_norm=float(norms64(pa).min()),
                               max_norm=float(norms64(pa).max()),
                               c_norm=float(np.linalg.norm(cfa.astype(np.float64))))
    return info


# ---------------------------------------------------------------------------------------------------------------
# g table, interpolation, gradient check, Adam self-check


def g_table(out):
    ds = [2, 4, 64, 256, 1024, 4096, 16384]
    rs = [0.5, 1.0, 3.0, 10.0, 15.968719422671311, 31.984371183438952, 90.0, 127.99609369039576, 128.0, 200.0]
    R, D, V, G = [], [], [], []
    for d in ds:
        for r in rs + [math.sqrt(d - 1)]:
            R.append(r)
            D.append(float(d))
            V.append(g_scalar(r, d))
            G.append(g_deriv_scalar(r, d))
    out["g.r"] = t64(R)
    out["g.d"] = t64(D)
    out["g.value"] = t64(V)
    out["g.deriv"] = t64(G)
    return dict(count=len(R), d=ds, r=rs + ["sqrt(d-1)"])


def interp_table(seed, out):
    D = 64
    rng = rng_for(seed, 3)
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    a = normal_f32(rng, D)
    pairs = {
        "generic": (a, normal_f32(rng, D)),
        # cos ~ 0.999 < 0.9995: still slerp
        "near_threshold": (a, (a + 0.045 * normal_f32(rng, D)).astype(np.float32)),
        # cos > 0.9995: lerp fallback
        "near_parallel": (a, (1.3 * a + 0.01 * normal_f32(rng, D)).astype(np.float32)),
        # cos < -0.9995: lerp fallback too (|cos| is tested)
        "near_antiparallel": (a, (-0.8 * a + 0.01 * normal_f32(rng, D)).astype(np.float32)),
    }
    out["interp.t"] = t64(ts)
    info = {}
    for name, (pa, pb) in pairs.items():
        a64, b64 = pa.astype(np.float64), pb.astype(np.float64)
        c = slerp_cos(a64, b64)
        fb = abs(c) > SLERP_DOT_THRESHOLD
        p = f"interp.{name}."
        out[p + "a"] = torch.from_numpy(pa.copy())
        out[p + "b"] = torch.from_numpy(pb.copy())
        out[p + "cos"] = f64_1(c)
        out[p + "fallback"] = i64_1(int(fb))
        out[p + "lerp"] = t64(np.stack([lerp(a64, b64, t) for t in ts]))
        out[p + "slerp"] = t64(np.stack([slerp(a64, b64, t) for t in ts]))
        info[name] = dict(cos=c, fallback=fb)
    assert not info["generic"]["fallback"] and not info["near_threshold"]["fallback"]
    assert info["near_parallel"]["fallback"] and info["near_antiparallel"]["fallback"]
    return dict(d=D, t=ts, pairs=info)


def fd_check(fn, x, coords, h=1e-5):
    """Central differences of the scalar fn at x (f64 tensor) on the given flat coords vs autograd."""
    xg = x.clone().requires_grad_(True)
    fn(xg).backward()
    worst = 0.0
    flat = x.reshape(-1)
    for k in coords:
        e = torch.zeros_like(flat)
        e[k] = h
        with torch.no_grad():
            num = (float(fn((flat + e).reshape(x.shape))) - float(fn((flat - e).reshape(x.shape)))) / (2 * h)
        ana = float(xg.grad.reshape(-1)[k])
        worst = max(worst, abs(num - ana) / max(1.0, abs(ana)))
    return xg.grad.detach().clone(), worst


def gradcheck(seed, out):
    d, n, m = 256, 5, 3
    rng = rng_for(seed, 4)
    a = normal_f32(rng, d)
    b = normal_f32(rng, d)
    k = (np.arange(1, n - 1)[:, None] / (n - 1))
    chord = a.astype(np.float64) + k * (b.astype(np.float64) - a.astype(np.float64))
    # point 1 pushed far off the chord: its two segments exceed eps; the others stay below
    scale = np.array([[1.2], [0.05], [0.05]])
    x = (chord + scale * rng.standard_normal((m, d))).astype(np.float32)
    eps = 2.0 * float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))) / n
    A, B, X = t64(a), t64(b), t64(x)
    with torch.no_grad():
        li, pen = path_terms(A, X, B, eps, d)
        L, _ = segments(A, X, B)
    margins = (L - eps).abs().min().item()
    assert margins > 0.1, margins
    assert (L > eps).any() and (L < eps).any()
    grad, worst = fd_check(lambda z: path_objective(A, z, B, eps, d), X, range(0, m * d, 37))
    p = "gradcheck.path."
    out[p + "a"] = torch.from_numpy(a)
    out[p + "b"] = torch.from_numpy(b)
    out[p + "x"] = torch.from_numpy(x)
    out[p + "eps"] = f64_1(eps)
    out[p + "objective"] = f64_1(float(-li + LAMBDA * pen))
    out[p + "line_integral"] = f64_1(float(li))
    out[p + "penalty"] = f64_1(float(pen))
    out[p + "grad"] = grad
    out[p + "lengths"] = L.clone()

    # centroid objective, K = 2
    K = 2
    seeds = np.stack([normal_f32(rng, d) for _ in range(K)])
    c = (slerp(seeds[0], seeds[1], 0.5) + 0.3 * rng.standard_normal(d)).astype(np.float32)
    xs = np.stack([(seeds[i].astype(np.float64) + k * (c.astype(np.float64) - seeds[i].astype(np.float64))
                    + 0.3 * rng.standard_normal((m, d))).astype(np.float32) for i in range(K)])
    eps_c = [2.0 * float(np.linalg.norm(seeds[i].astype(np.float64) - c.astype(np.float64))) / n
             for i in range(K)]
    S = t64(seeds)
    flat = torch.cat([t64(xs).reshape(-1), t64(c)])

    def fc(z):
        return centroid_objective(S, [z[: m * d].reshape(m, d), z[m * d: 2 * m * d].reshape(m, d)],
                                  z[2 * m * d:], eps_c, d)

    gc, worst_c = fd_check(fc, flat, list(range(0, flat.numel(), 41)) + list(range(2 * m * d, flat.numel(), 7)))
    with torch.no_grad():
        oc = float(fc(flat))
    p = "gradcheck.centroid."
    out[p + "seeds"] = torch.from_numpy(seeds)
    out[p + "x"] = torch.from_numpy(xs)
    out[p + "c"] = torch.from_numpy(c)
    out[p + "eps"] = t64(eps_c)
    out[p + "objective"] = f64_1(oc)
    out[p + "grad_x"] = gc[: 2 * m * d].reshape(K, m, d).clone()
    out[p + "grad_c"] = gc[2 * m * d:].clone()
    return dict(path=dict(d=d, n=n, eps=eps, fd_worst_rel=worst, lengths=L.tolist()),
                centroid=dict(d=d, n=n, K=K, eps=eps_c, fd_worst_rel=worst_c))


def adam_self_check(seed):
    """The written-out Adam vs torch.optim.Adam on the path objective, 200 steps, f64."""
    d, n = 256, 5
    rng = rng_for(seed, 5)
    a, b = normal_f32(rng, d), normal_f32(rng, d)
    init = chord_init(rng, a, b, n)
    eps = 2.0 * float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))) / n
    A, B = t64(a), t64(b)
    x1 = t64(init).requires_grad_(True)
    x2 = t64(init).requires_grad_(True)
    o1 = Adam([x1], LR)
    o2 = torch.optim.Adam([x2], lr=LR)
    for _ in range(200):
        for x, o in ((x1, o1), (x2, o2)):
            x.grad = None
            path_objective(A, x, B, eps, d).backward()
            o.step()
    diff = float((x1 - x2).detach().abs().max())
    assert diff < 1e-9, diff
    return diff


# ---------------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cases-out", type=Path, default=CASES_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--centroid-n", type=int, default=9, help="points per centroid path incl. both endpoints")
    ap.add_argument("--centroid-eps", choices=["path", "seeds"], default="path",
                    help="path: eps_i = 2|s_i - c0|/n (issue); seeds: 2|s_1 - s_2|/n (authors, MAIN:172)")
    ap.add_argument("--no-16384", action="store_true", help="skip the d = 16384 cases")
    ap.add_argument("--no-authors", action="store_true", help="skip the authors' float32 variant")
    ap.add_argument("--no-converged", action="store_true",
                    help="skip the 10 000-step runs without early stop (path cases)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    authors = not args.no_authors
    conv = not args.no_converged
    out = {}
    cases = []
    adam_diff = adam_self_check(args.seed)
    g_info = g_table(out)
    interp_info = interp_table(args.seed, out)
    gc_info = gradcheck(args.seed, out)

    for d in (256, 1024):
        for n in (5, 9):
            cases.append(run_path_case(f"path_d{d}_n{n}", d, n, args.seed, out, authors, conv))
    if not args.no_16384:
        cases.append(run_path_case("path_d16384_n9", 16384, 9, args.seed, out, authors, conv))
    cn = args.centroid_n
    for K in (2, 3):
        cases.append(run_centroid_case(f"centroid_d1024_k{K}", 1024, cn, K, args.seed, out, args.centroid_eps,
                                       authors))
    if not args.no_16384:
        cases.append(run_centroid_case("centroid_d16384_k2", 16384, 5, 2, args.seed, out, args.centroid_eps,
                                       authors))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, str(args.out))
    meta = dict(
        generator="tests/reference/make_nao_reference.py",
        seed=args.seed,
        optimiser=dict(kind="adam", lr=LR, betas=list(ADAM_BETAS), eps=ADAM_EPS, max_iter=MAX_ITER,
                       path_tol=PATH_TOL, path_patience=PATH_PATIENCE, centroid_tol=CENTROID_TOL,
                       centroid_patience=CENTROID_PATIENCE, lambda_=LAMBDA, noise="U[0,0.01)",
                       slerp_dot_threshold=SLERP_DOT_THRESHOLD),
        adam_vs_torch_max_abs_diff=adam_diff,
        g_table=g_info,
        interp=interp_info,
        gradcheck=gc_info,
        cases=cases,
    )
    args.cases_out.parent.mkdir(parents=True, exist_ok=True)
    args.cases_out.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    print(f"adam vs torch.optim.Adam (200 steps, f64): max |diff| {adam_diff:.2e}")
    print(f"gradcheck: path fd worst rel {gc_info['path']['fd_worst_rel']:.2e}, "
          f"centroid {gc_info['centroid']['fd_worst_rel']:.2e}")
    hdr = (f"{'case':22} {'iters':>6} {'objective':>14} {'min|x|':>9} {'max|x|':>9} {'sqrt(d-1)':>9} "
           f"{'|c|':>8} | {'authors: iters':>14} {'objective':>14} {'min|x|':>9} {'max|x|':>9}")
    print(hdr)
    for c in cases:
        r = math.sqrt(c["d"] - 1)
        cn_ = f"{c['c_norm']:8.3f}" if "c_norm" in c else " " * 8
        line = (f"{c['name']:22} {c['iterations']:6d} {c['objective']:14.6f} {c['min_norm']:9.3f} "
                f"{c['max_norm']:9.3f} {r:9.3f} {cn_}")
        if "authors" in c:
            au = c["authors"]
            line += f" | {au['iterations']:14d} {au['objective']:14.6f} {au['min_norm']:9.3f} {au['max_norm']:9.3f}"
        print(line)
    for c in cases:
        if "converged" in c:
            cv = c["converged"]
            print(f"{c['name']}: without early stop ({cv['iterations']} steps) objective {cv['objective']:.6f} "
                  f"(stopped one is {100 * (c['objective'] / cv['objective'] - 1):+.2f} %), "
                  f"|x| {cv['min_norm']:.3f}..{cv['max_norm']:.3f}")
    for c in cases:
        if c["kind"] == "path" and c["d"] == 16384:
            nr = out[c["name"] + ".norms"].tolist()
            print(f"{c['name']}: interior norms {', '.join(f'{v:.3f}' for v in nr)}; sqrt(d-1) = "
                  f"{math.sqrt(c['d'] - 1):.3f}; lerp midpoint norm {c['lerp_mid_norm']:.3f}; "
                  f"slerp midpoint norm {c['slerp_mid_norm']:.3f}")
        if c["kind"] == "centroid":
            print(f"{c['name']}: |c| {c['c_norm']:.3f} (init {c['c_init_norm']:.3f}), normalised mean "
                  f"{c['mean_normalised_norm']:.3f}, shell mean {c['mean_shell_norm']:.3f}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), {args.cases_out}")


if __name__ == "__main__":
    main()
