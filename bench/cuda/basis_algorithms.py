# Algorithm space of the randomized principal basis, in exact (f64) arithmetic with PyTorch on the
# GPU machine: reconstruction error / optimum and singular-value errors of subspace-iteration
# variants on the benchmark's input (atp_cuda_bench's Activations: 128 decaying directions plus
# noise, L = 16384, d = 4096, r = 512), against torch.linalg.eigh of the Gram matrix.
#
#   python3 bench/cuda/basis_algorithms.py        (about 10 s on the H200; no atp binary needed)
#
# Used in session 5 (bench/cuda/NOTES.md v11) to decide which algorithmic changes could cut
# CholeskyQR passes before writing CUDA: start block (Gaussian or a sketch Xᵀ·Ω), products p,
# oversampling, block Krylov spaces, a shifted iteration and Chebyshev filters (both with the exact
# λ_{k+1}, i.e. upper bounds on what an estimate could give). The rows with "products" count the
# Rayleigh–Ritz product too. Its default-path figure (Gaussian start, p = 5, k = 528: 1.0063)
# matches the CUDA backend's measured 1.0064.
import math, time, torch
torch.manual_seed(0)
dev = 'cuda'
L, d, r = 16384, 4096, 512
kk = 128
g = torch.randn(L, kk, device=dev, dtype=torch.float64)
h = torch.randn(kk, d, device=dev, dtype=torch.float64) / math.sqrt(kk)
s = torch.tensor([3.0 * 0.97 ** i for i in range(kk)], device=dev, dtype=torch.float64)
h = h * s[:, None]
X = 0.3 * torch.randn(L, d, device=dev, dtype=torch.float64) + g @ h
X = X.to(torch.bfloat16).to(torch.float64)
G = X.T @ X
total = torch.trace(G).item()
t0 = time.time()
lam, V = torch.linalg.eigh(G)
lam = lam.flip(0); V = V.flip(1)
print(f"eigh {time.time()-t0:.1f}s  sigma1 {lam[0].sqrt():.2f} sigma_r {lam[r-1].sqrt():.3f} sigma_r+16 {lam[r+15].sqrt():.3f} sigma_r+64 {lam[r+63].sqrt():.3f} lam1/lam_r {lam[0]/lam[r-1]:.1f}")
opt = math.sqrt(total - lam[:r].sum().item())
sig_ex = lam[:r].sqrt()

def orth(Y):
    Q, _ = torch.linalg.qr(Y)
    return Q

def report(name, Q, products):
    T = Q.T @ G @ Q
    T = (T + T.T) / 2
    th, W = torch.linalg.eigh(T)
    th = th.flip(0)[:r]
    rec = math.sqrt(max(total - th.sum().item(), 0)) / opt
    sig = th.clamp(min=0).sqrt()
    err = ((sig / sig_ex) - 1).abs().max().item()
    err128 = ((sig[:128] / sig_ex[:128]) - 1).abs().max().item()
    print(f"{name:>40} k={Q.shape[1]:4d} products={products} recon={rec:.5f} sig_err={err:.2e} sig_err_top128={err128:.2e}")

def si(p, k, start='gauss', seed=1):
    gen = torch.Generator(device=dev).manual_seed(seed)
    if start == 'gauss':
        Q = torch.randn(d, k, device=dev, dtype=torch.float64, generator=gen)
    else:  # sketch of X: X^T Omega
        Q = X.T @ torch.randn(L, k, device=dev, dtype=torch.float64, generator=gen)
    for _ in range(p):
        Q = orth(G @ Q)
    return Q

for k in (528, 544, 576):
    for p in (2, 3, 4, 5, 6):
        for start in ('gauss', 'sketch'):
            report(f"SI start={start} p={p}", si(p, k, start), p + 1)

# Block Krylov: [Q0, G Q0, ..., G^{q} Q0] orthonormalised, block b
def extend_krylov(Q, depth):
    blocks = [Q]
    for _ in range(depth - 1):
        Z = G @ blocks[-1]
        B = torch.cat(blocks, 1)
        Z = Z - B @ (B.T @ Z); Z = Z - B @ (B.T @ Z)
        blocks.append(orth(Z))
    return torch.cat(blocks, 1)
def krylov(b, depth, start='gauss'):
    gen = torch.Generator(device=dev).manual_seed(2)
    Q = torch.randn(d, b, device=dev, dtype=torch.float64, generator=gen)
    if start == 'sketch':
        Q = X.T @ torch.randn(L, b, device=dev, dtype=torch.float64, generator=gen)
    return extend_krylov(orth(Q), depth)
for b, depth in ((132, 4), (176, 3), (264, 2), (106, 5), (88, 6)):
    report(f"block Krylov b={b} depth={depth}", krylov(b, depth), depth)
# Krylov after a few subspace iterations: start block from SI(p) of width b
def si_krylov(p, b, depth):
    return extend_krylov(si(p, b), depth)
for p, b, depth in ((2, 264, 2), (3, 264, 2), (4, 264, 2), (2, 176, 3), (3, 176, 3)):
    report(f"SI p={p} then Krylov b={b} depth={depth}", si_krylov(p, b, depth), p + depth)
# RR on [Q_{p-1}, Q_p] (two last iterates) — larger k
def si_last_two(p, k):
    gen = torch.Generator(device=dev).manual_seed(1)
    Q = torch.randn(d, k, device=dev, dtype=torch.float64, generator=gen)
    prev = None
    for _ in range(p):
        prev = Q
        Q = orth(G @ Q)
    B = orth(torch.cat([prev, Q], 1))
    return B
for p, k in ((3, 264), (3, 280), (4, 264), (2, 300)):
    report(f"SI last-two p={p}", si_last_two(p, k), p + 1)
# Shifted iteration with the exact lambda_{k+1} (upper bound on its benefit)
def si_shift(p, k, frac):
    gen = torch.Generator(device=dev).manual_seed(1)
    Q = torch.randn(d, k, device=dev, dtype=torch.float64, generator=gen)
    mu = frac * lam[k].item()
    for _ in range(p):
        Q = orth(G @ Q - mu * Q)
    return Q
for p in (3, 4):
    for frac in (0.5, 0.8):
        report(f"SI shifted mu={frac}*lam_k+1 p={p}", si_shift(p, 528, frac), p + 1)
# Chebyshev filter of degree m on [0, a] (a = exact lambda_{k+1} * frac), orthonormalised after each filter
def cheb(Q, m, a):
    # T_m((2G - a)/a) Q by the three-term recurrence, scaled
    e = a / 2.0; c = a / 2.0
    Y0 = Q
    Y1 = (G @ Q - c * Q) / e
    for _ in range(2, m + 1):
        Y2 = 2 * (G @ Y1 - c * Y1) / e - Y0
        Y0, Y1 = Y1, Y2
    return Y1
for m, reps, frac in ((2, 2, 1.0), (3, 1, 1.0), (2, 2, 0.95), (3, 2, 1.0), (4, 1, 1.0), (5, 1, 1.0)):
    gen = torch.Generator(device=dev).manual_seed(1)
    Q = orth(torch.randn(d, 528, device=dev, dtype=torch.float64, generator=gen))
    Q = orth(G @ Q)
    for _ in range(reps):
        Y = cheb(Q, m, frac * lam[528].item())
        Q = orth(Y)
    report(f"1 power + Chebyshev m={m} x{reps} a={frac}*lam_k+1", Q, 1 + m * reps + 1)
