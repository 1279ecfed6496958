"""An independent float64 implementation of DESIGN.md section 1, used to check the `atp` CLI.

Written from the design text alone (it shares no code with kernels/): NumPy's LAPACK SVD in float64,
the sign rule, the three rank policies with max_rank, both key scales, ATP attention with grouped
KV heads and biases, exact attention (optionally causal), and the low-rank linear layer. Files are
read with NumPy directly; the .safetensors reader and writer here are written from the format's
description, independently of the C++ one.
"""

import json
import math
import struct
from fractions import Fraction

import numpy as np

# ------------------------------------------------------------------------------------------------
# Files.

_ST_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2)}


def bf16_bits(x):
    """float32 values -> bfloat16 bit patterns (round to nearest even), as uint16."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_to_f64(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32).astype(
        np.float64)


def read_safetensors(path):
    """Returns ({name: float64 array}, {name: dtype string}, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors, dtypes = {}, {}
    for name, info in header.items():
        np_dtype, size = _ST_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        assert end - begin == size * int(np.prod(shape, dtype=np.int64)), name
        raw = np.frombuffer(data[begin:end], dtype=np_dtype).reshape(shape)
        tensors[name] = bf16_to_f64(raw) if info["dtype"] == "BF16" else raw.astype(np.float64)
        dtypes[name] = info["dtype"]
    return tensors, dtypes, metadata


def write_safetensors(path, tensors, metadata=None, dtype="F32"):
    """Writes float arrays as `dtype` (F32, F16 or BF16), in reverse name order (unlike atp)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name in sorted(tensors, reverse=True):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        else:
            raw = bf16_bits(a).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


class Layer:
    """A layer file read into float64 weights and its configuration."""

    def __init__(self, path):
        self.weights, self.dtypes, md = read_safetensors(path)
        self.metadata = md
        if "weight" in self.weights:
            self.kind = "linear"
        else:
            self.kind = "attention"
            q = self.weights["q_proj.weight"]
            self.d_model = q.shape[1]
            self.num_heads = int(md["num_heads"])
            self.num_kv_heads = int(md.get("num_kv_heads", self.num_heads))
            self.head_dim = int(md.get("head_dim", q.shape[0] // self.num_heads))
            self.key_scale = md.get("key_scale", "none")
            self.scale = float(md["scale"]) if "scale" in md else 1.0 / math.sqrt(self.head_dim)
        self.default_rank = parse_policy(md.get("default_rank", "energy 0.99"))

    def linear(self, prefix):
        w = self.weights[f"{prefix}.weight" if prefix else "weight"]
        b = self.weights.get(f"{prefix}.bias" if prefix else "bias")
        return w, b


# ------------------------------------------------------------------------------------------------
# Principal bases.


class Policy:
    """kind: 'fixed', 'fraction' or 'energy'; value as the user wrote it (a string or number)."""

    def __init__(self, kind, value, max_rank=0):
        self.kind, self.value, self.max_rank = kind, str(value), int(max_rank)

    def __repr__(self):
        return f"{self.kind} {self.value}" + (f" max {self.max_rank}" if self.max_rank else "")


def parse_policy(text):
    words = text.split()
    return Policy(words[0], words[1], int(words[3]) if len(words) == 4 else 0)


def rank_bound(policy, L, d, backend_max=0):
    bound = min(L, d)
    if policy.max_rank > 0:
        bound = min(bound, policy.max_rank)
    if backend_max > 0:
        bound = min(bound, backend_max)
    return max(bound, 1)


def resolve_rank(policy, L, d, sigma):
    """r of DESIGN.md: fixed r; ceil(rho*L) (exact decimal arithmetic); smallest r reaching tau."""
    bound = rank_bound(policy, L, d)
    if policy.kind == "fixed":
        r = int(policy.value)
    elif policy.kind == "fraction":
        r = math.ceil(Fraction(policy.value) * L)
    elif policy.kind == "energy":
        sq = np.asarray(sigma, dtype=np.float64) ** 2
        total = sq.sum()
        want = float(policy.value) * total
        csum = np.cumsum(sq)
        hits = np.nonzero(csum >= want)[0]
        r = int(hits[0]) + 1 if len(hits) else bound
    else:
        raise ValueError(policy.kind)
    return min(max(r, 1), bound)


def energy_is_ambiguous(policy, sigma, r, tol=1e-5):
    """True when float32 rounding could move the energy policy's r (cumulative energy near tau)."""
    if policy.kind != "energy":
        return False
    sq = np.asarray(sigma, dtype=np.float64) ** 2
    total = sq.sum()
    if total == 0:
        return False
    frac = np.cumsum(sq) / total
    tau = float(policy.value)
    return any(abs(frac[i] - tau) < tol for i in range(max(0, r - 2), min(len(frac), r + 1)))


def apply_sign_rule(u, vt):
    """Negates u_i and v_i unless 1^T u_i > 0 (or, when |1^T u_i| < 1e-6 sqrt(L), unless the
    entry of u_i with the largest magnitude, the first on ties, is positive)."""
    u, vt = u.copy(), vt.copy()
    L = u.shape[0]
    for i in range(u.shape[1]):
        t = u[:, i].sum()
        if abs(t) < 1e-6 * math.sqrt(L):
            t = u[int(np.argmax(np.abs(u[:, i]))), i]
        if t < 0:
            u[:, i] = -u[:, i]
            vt[i, :] = -vt[i, :]
    return u, vt


def svd(x):
    """Full thin SVD of x in float64 with the sign rule: (u [L,m], s [m], vt [m,d])."""
    u, s, vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
    u, vt = apply_sign_rule(u, vt)
    return u, s, vt


def decompose(x, policy, rank=None):
    """Principal bases: (u_r, s_r, vt_r, r, captured energy). `rank` overrides the policy."""
    x = np.asarray(x, dtype=np.float64)
    u, s, vt = svd(x)
    r = resolve_rank(policy, x.shape[0], x.shape[1], s) if rank is None else rank
    total = float((x * x).sum())
    energy = float((s[:r] ** 2).sum() / total) if total > 0 else 1.0
    return u[:, :r], s[:r], vt[:r, :], r, energy


# ------------------------------------------------------------------------------------------------
# Ops.


def _softmax_rows(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _project(x, layer, prefix):
    w, b = layer.linear(prefix)
    y = x @ w.T
    return y if b is None else y + b


def _attend(layer, q, k, v, mask=None):
    """concat_h softmax(s q_h k_g^T) v_g, then the output projection."""
    H, G, dh = layer.num_heads, layer.num_kv_heads, layer.head_dim
    group = H // G
    heads = []
    for h in range(H):
        g = h // group
        qh = q[:, h * dh:(h + 1) * dh]
        kg = k[:, g * dh:(g + 1) * dh]
        vg = v[:, g * dh:(g + 1) * dh]
        logits = layer.scale * (qh @ kg.T)
        if mask is not None:
            logits = np.where(mask, logits, -np.inf)
        heads.append(_softmax_rows(logits) @ vg)
    return _project(np.concatenate(heads, axis=1), layer, "o_proj")


def atp_attention(layer, x, policy=None, rank=None):
    """ATP attention of DESIGN.md: (y, r, energy). `policy` None means the layer's default."""
    x = np.asarray(x, dtype=np.float64)
    L = x.shape[0]
    u, s, vt, r, energy = decompose(x, policy or layer.default_rank, rank)
    c = 1.0 / math.sqrt(L) if layer.key_scale == "inv_sqrt_len" else 1.0
    x_tilde = c * (s[:, None] * vt)            # r x d: c U_r^T X
    ones = c * u.sum(axis=0)                   # r:     c U_r^T 1
    q = _project(x, layer, "q_proj")
    wk, bk = layer.linear("k_proj")
    wv, bv = layer.linear("v_proj")
    k = x_tilde @ wk.T + (0 if bk is None else np.outer(ones, bk))
    v = x_tilde @ wv.T + (0 if bv is None else np.outer(ones, bv))
    return _attend(layer, q, k, v), r, energy


def exact_attention(layer, x, causal=False):
    x = np.asarray(x, dtype=np.float64)
    L = x.shape[0]
    q = _project(x, layer, "q_proj")
    k = _project(x, layer, "k_proj")
    v = _project(x, layer, "v_proj")
    mask = np.tril(np.ones((L, L), dtype=bool)) if causal else None
    return _attend(layer, q, k, v, mask)


def lowrank_linear(layer, prefix, x, policy=None, rank=None):
    """Y = U_r ((S_r V_r^T) W^T) + 1 b^T: (y, r, energy)."""
    u, s, vt, r, energy = decompose(x, policy or layer.default_rank, rank)
    w, b = layer.linear(prefix)
    y = u @ ((s[:, None] * vt) @ w.T)
    return (y if b is None else y + b), r, energy


def lowrank_linear_factored(layer, prefix, u, c):
    """Y = U (C W^T) + 1 b^T for an input given as X = U C (used as it is, no decomposition)."""
    w, b = layer.linear(prefix)
    y = u @ (c @ w.T)
    return y if b is None else y + b


def rel_error(got, want):
    """Relative Frobenius error ||got - want|| / ||want|| (absolute when want is 0)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    denom = np.linalg.norm(want)
    diff = np.linalg.norm(got - want)
    return diff / denom if denom > 0 else diff
