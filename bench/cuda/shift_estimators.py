# Spectral-shift estimators for the subspace iteration, scaled down so that it runs anywhere with
# numpy in a few seconds (no GPU): the benchmark's input structure at L = 4096, d = 1024, r = 128,
# k = 144 (decaying signal plus Marchenko–Pastur noise of the same aspect ratio), then the GPU
# tests' inputs at L = 2500, d = 700, r = 40, k = 56.
#
#   python3 bench/cuda/shift_estimators.py
#
# Each estimator gives μ after the second product; the later products use G − μI; the result is
# accepted only if μ <= θ_k/2 (θ_k the final block's smallest Ritz value), as in basis.cc
# ("check_ok"/"REJ": a rejected run is recomputed unshifted there). "resid" is basis.cc's
# estimator (fraction · residual / (m − k)); "chol_min" takes half the smallest diagonal entry of
# the second pass's Cholesky factor (better on noise-dominated inputs, but it overshoots and is
# rejected on gapped ones); "exact" uses λ_{k+1} (an upper bound on what an estimate can give).
# Findings are in bench/cuda/NOTES.md v11 and "What is left".
import numpy as np, math
rng = np.random.default_rng(0)
L, d, r, k, kk = 4096, 1024, 128, 144, 32
g = rng.standard_normal((L, kk)); h = rng.standard_normal((kk, d)) / math.sqrt(kk)
h *= (3.0 * 0.97 ** (4 * np.arange(kk)))[:, None]
X = 0.3 * rng.standard_normal((L, d)) + g @ h
G = X.T @ X; m = d
lam = np.linalg.eigvalsh(G)[::-1]; total = lam.sum()
opt = math.sqrt(total - lam[:r].sum())
print(f"lam_k+1={lam[k]:.1f} lam_min={lam[-1]:.1f} lam_r/lam_k+1={lam[r-1]/lam[k]:.4f}")
def orth(Y): return np.linalg.qr(Y)[0]
def run(p, est):
    Q = orth(G @ np.random.default_rng(1).standard_normal((m, k)))
    mu = 0.0
    for it in range(1, p):
        Y = G @ Q - mu * Q
        if it == 1 and est is not None:
            mu = est(Q, Y)
            Y = Y - mu * Q
        Q = orth(Y)
    w, W = np.linalg.eigh(Q.T @ G @ Q)
    V = Q @ W[:, ::-1][:, :r]
    cap = np.trace(V.T @ G @ V)
    ok = mu <= 0.5 * max(w[0], 0)
    # A matrix of rank < r has no tail to compare with (opt = 0): no ratio then.
    rec = math.sqrt(max(total - cap, 0)) / opt if opt > 1e-6 * math.sqrt(total) else float('nan')
    return rec, (mu / lam[k] if lam[k] > 1e-9 * lam[0] else float('nan')), ok
def resid_est(frac):
    return lambda Q, Y: frac * (total - np.sum(Q * Y)) / (m - k)
def chol_min(frac):
    def f(Q, Y):
        B = Y.T @ Y; R = np.linalg.cholesky(B + 1e-13 * np.trace(B) * np.eye(B.shape[0])).T
        return frac * np.min(np.abs(np.diag(R)))
    return f
def chol_tail(frac, n=16):
    def f(Q, Y):
        B = Y.T @ Y; R = np.linalg.cholesky(B + 1e-13 * np.trace(B) * np.eye(B.shape[0])).T
        return frac * np.median(np.abs(np.diag(R))[-n:])
    return f
for p in (3, 4, 5):
    print(f"p={p} unshifted: recon={run(p, None)[0]:.5f}")
    for name, est in (("resid 0.5", resid_est(0.5)), ("resid 0.8", resid_est(0.8)), ("resid 1.0", resid_est(1.0)),
                      ("chol_min 0.5", chol_min(0.5)), ("chol_tail 0.5", chol_tail(0.5)), ("exact 0.5", lambda Q, Y: 0.5 * lam[k])):
        rec, mrel, ok = run(p, est)
        print(f"p={p} {name:>14}: recon={rec:.5f} mu/lam_k+1={mrel:.3f} check_ok={ok}")

# The test inputs (L=2500, d=700, r=40, k=56).
def lowrank(rank, noise, seed, decay=0.8):
    rg = np.random.default_rng(seed)
    g = rg.standard_normal((2500, rank)); h = rg.standard_normal((rank, 700)) * (decay ** np.arange(rank))[:, None]
    return g @ h + noise * rg.standard_normal((2500, 700))
for name, Xt in (("gapped", lowrank(24, 0.01, 3)), ("rank-def", lowrank(24, 0.0, 3)), ("cliff", lowrank(57, 0.0, 4, 0.95)),
                 ("moderate", lowrank(24, 1.0, 3)), ("flat", np.random.default_rng(7).standard_normal((2500, 700)))):
    G = Xt.T @ Xt; m = 700; k = 56; r = 40
    lam = np.linalg.eigvalsh(G)[::-1]; total = lam.sum(); opt = math.sqrt(max(total - lam[:r].sum(), 1e-300))
    for p in (3, 5):
        res = [f"unshifted={run(p, None)[0]:.5f}"]
        for nm, est in (("resid0.5", resid_est(0.5)), ("chol_min0.5", chol_min(0.5))):
            rec, mrel, ok = run(p, est)
            res.append(f"{nm}={rec:.5f}(mu/l={mrel:.2f},{'ok' if ok else 'REJ'})")
        print(f"{name} p={p}: " + " ".join(res))
