# A prototype of the two-stage tridiagonalisation for the resident eigensolver (numpy, seconds):
# dense -> band of half-width b by panel QRs (compact WY) and two-sided block updates, then band
# -> tridiagonal by chasing bulges with Householder reflectors of length <= b. It checks the
# numerics (the band form, and T's eigenvalues against numpy's) and counts what sets the GPU
# time: the panel QR steps (one block each), the cluster barriers of the block updates (~4 per
# panel), the chase's reflectors and its longest chain of dependent reflectors when sweeps run
# three hops apart (every reflector a warp-sized job), and that schedule itself: the hops due at
# the same time are run in reverse order and must give the same T to the bit (two hops apart
# they do not: hop h of sweep j and hop h - 2 of sweep j + 1 share an entry). The CUDA version
# built on it (commit 110376f) and its measurements are in bench/cuda/NOTES.md, v13.
#
#   python3 bench/cuda/two_stage_tridiag.py
import math
import time

import numpy as np


def house(x):
    """v, tau, beta with (I - tau v v^T) x = beta e1, v[0] = 1 (LAPACK dlarfg)."""
    alpha = x[0]; xn = np.linalg.norm(x[1:])
    v = np.zeros_like(x); v[0] = 1.0
    if xn == 0: return v, 0.0, alpha
    beta = -math.copysign(math.hypot(alpha, xn), alpha)
    v[1:] = x[1:] / (alpha - beta)
    return v, (beta - alpha) / beta, beta
def dense_to_band(A, b):
    A = A.copy(); n = A.shape[0]; panels = 0; panel_steps = 0
    for s in range(0, n - b - 1, b):
        r0 = s + b  # rows below the band
        P = A[r0:, s:s + b].copy()
        m = P.shape[0]; Vs = []; taus = []
        for c in range(min(b, m - 1)):  # panel QR, one column at a time (one block on the GPU)
            v, tau, beta = house(P[c:, c]); panel_steps += 1
            P[c:, c:] -= tau * np.outer(v, v @ P[c:, c:])
            vv = np.zeros(m); vv[c:] = v; Vs.append(vv); taus.append(tau)
        panels += 1
        V = np.array(Vs).T  # m x b
        # compact WY: Q = I - V T V^T
        T = np.zeros((len(taus), len(taus)))
        for i, tau in enumerate(taus):
            T[i, i] = tau
            if i: T[:i, i] = -tau * T[:i, :i] @ (V[:, :i].T @ V[:, i])
        Q = np.eye(m) - V @ T @ V.T
        A[r0:, s:s + b] = Q.T @ A[r0:, s:s + b]; A[s:s + b, r0:] = A[r0:, s:s + b].T
        A[r0:, r0:] = Q.T @ A[r0:, r0:] @ Q  # on the GPU: W = A22 V T ... and a rank-2b update
    return A, panels, panel_steps
def chase_tasks(n, b):
    """(sweep j, hop h) of the chase in sequential order."""
    return [(j, h) for j in range(n - 2) for h in range((n - 2 - j + b - 1) // b)]


def band_to_tridiag(A, b, order):
    """Bulge chasing with Householder reflectors of length <= b, the hops in the given order:
    returns (d, e, reflectors applied)."""
    A = A.copy(); n = A.shape[0]; count = 0
    for j, h in order:
        r0 = j + 1 + h * b  # rows r0..r1-1; column j, or the first column of the last bulge
        col = j if h == 0 else r0 - b
        r1 = min(r0 + b, n)
        x = A[r0:r1, col].copy()
        if r1 - r0 > 1 and np.linalg.norm(x[1:]) > 0:
            v, tau, beta = house(x)
            lo, hi = col, min(r1 + b, n)
            A[r0:r1, lo:hi] -= tau * np.outer(v, v @ A[r0:r1, lo:hi])
            A[lo:hi, r0:r1] -= tau * np.outer(A[lo:hi, r0:r1] @ v, v)
            count += 1
    return np.diag(A).copy(), np.diag(A, 1).copy(), count


def same_time_reversed(tasks, apart):
    """The pipelined schedule, hop h of sweep j at time apart·j + h, with the hops due at the same
    time in reverse order (as if they ran at once)."""
    return sorted(tasks, key=lambda t: (apart * t[0] + t[1], -t[0]))


rng = np.random.default_rng(0)
for n in (528,):
    M = rng.standard_normal((n, n)); A = (M + M.T) / 2
    w = np.linalg.eigvalsh(A)
    for b in (8, 16, 32):
        t0 = time.time()
        B, panels, psteps = dense_to_band(A, b)
        band_err = np.max(np.abs(np.triu(B, b + 1))) / np.max(np.abs(A))
        tasks = chase_tasks(n, b)
        d, e, count = band_to_tridiag(B, b, tasks)
        T = np.diag(d) + np.diag(e, 1) + np.diag(e, -1)
        err = np.max(np.abs(np.linalg.eigvalsh(T) - w)) / np.max(np.abs(w))
        same = {}
        for apart in (2, 3):
            d2, e2, _ = band_to_tridiag(B, b, same_time_reversed(tasks, apart))
            same[apart] = np.array_equal(d, d2) and np.array_equal(e, e2)
        depth = max(3 * j + h for j, h in tasks) + 1
        print(f"n={n} b={b}: panels {panels} (panel QR steps {psteps}, cluster barriers "
              f"~{4 * panels}), outside-band {band_err:.1e}; chase reflectors {count}, pipelined "
              f"chain {depth} hops (sweeps 3 apart: same T {same[3]}; 2 apart: {same[2]}); "
              f"eigenvalue error {err:.1e} ({time.time() - t0:.1f} s)", flush=True)
