#!/usr/bin/env python3
"""Tables for bench/RESULTS.md from atp_cuda_bench's and anchors.py's JSON lines.

usage: summarize.py OURS.jsonl ANCHORS.jsonl  (markdown on stdout)
"""
import json
import math
import sys


def load(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except OSError:
        pass
    return rows


def fmt(v, digits=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def main():
    ours = load(sys.argv[1]) if len(sys.argv) > 1 else []
    anchors = load(sys.argv[2]) if len(sys.argv) > 2 else []
    by = lambda rows, kind: [r for r in rows if r.get("kind") == kind]  # noqa: E731
    out = []
    p = out.append

    for r in by(ours, "device") + by(anchors, "torch_device"):
        p(f"- {r}")
    for r in by(ours, "peak") + by(anchors, "torch_peak"):
        extra = f"{fmt(r.get('tflops'), 0)} TFLOP/s" if "tflops" in r else \
            f"{fmt(r.get('tbps'))} TB/s"
        p(f"- {r['kind']} {r['what']}: {fmt(r['ms'], 3)} ms, {extra}")
    peak = next((r["tflops"] for r in by(ours, "peak") if "tflops" in r), None)
    p("")

    exact = {r["L"]: r for r in by(ours, "exact_layer")}
    sdpa = {(r["L"], r["backend"]): r for r in by(anchors, "torch_sdpa")}
    texact = {r["L"]: r for r in by(anchors, "torch_exact_layer")}
    lengths = sorted(exact) or sorted({k[0] for k in sdpa})

    p("Exact attention core (ms, TFLOP/s): ours = cuDNN SDPA through the graph API")
    p("")
    p("| L | ours | ours TFLOP/s | torch cuDNN | torch flash | ours / torch cuDNN |")
    p("|---|---|---|---|---|---|")
    for L in lengths:
        o = exact.get(L, {}).get("stages", {}).get("core")
        c = sdpa.get((L, "cudnn"), {}).get("ms")
        f = sdpa.get((L, "flash"), {}).get("ms")
        p(f"| {L} | {fmt(o, 3)} | {fmt(exact.get(L, {}).get('core_tflops'), 0)} | {fmt(c, 3)} | "
          f"{fmt(f, 3)} | {fmt(o / c if o and c else None)} |")
    p("")

    p("Exact layer (ms): projections + core + output")
    p("")
    p("| L | ours proj | ours core | ours out | ours total | torch total |")
    p("|---|---|---|---|---|---|")
    for L in lengths:
        s = exact.get(L, {}).get("stages", {})
        p(f"| {L} | {fmt(s.get('projections'), 3)} | {fmt(s.get('core'), 3)} | "
          f"{fmt(s.get('output'), 3)} | {fmt(s.get('total'), 3)} | "
          f"{fmt(texact.get(L, {}).get('stages', {}).get('total'), 3)} |")
    p("")

    atp = {(r["L"], r["r"]): r for r in by(ours, "atp_layer")}
    tatp = {(r["L"], r["r"]): r for r in by(anchors, "torch_atp_layer")}
    p("ATP layer (ms) per stage; speed-up = exact layer / ATP layer (ours vs ours)")
    p("")
    p("| L | r | basis | tokens | proj | core | out | total | speed-up | torch ATP | "
      "vs torch ATP |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    for (L, r), row in sorted(atp.items()):
        s = row["stages"]
        ex = exact.get(L, {}).get("stages", {}).get("total")
        ta = tatp.get((L, r), {}).get("stages", {}).get("total")
        p(f"| {L} | {r} | {fmt(row.get('basis'), 3)} | {fmt(s.get('principal_tokens'), 3)} | "
          f"{fmt(s.get('projections'), 3)} | {fmt(s.get('core'), 3)} | "
          f"{fmt(s.get('output'), 3)} | {fmt(s.get('total'), 3)} | "
          f"{fmt(ex / s['total'] if ex and s.get('total') else None)}x | {fmt(ta, 2)} | "
          f"{fmt(ta / s['total'] if ta and s.get('total') else None)}x |")
    p("")

    # Crossover: where ATP total = exact total, interpolated in log L between measured lengths.
    p("Crossover length (ATP layer faster than our exact layer from):")
    p("")
    for r in sorted({k[1] for k in atp}):
        pts = [(L, exact[L]["stages"]["total"] / atp[(L, r)]["stages"]["total"])
               for L in lengths if (L, r) in atp and L in exact]
        cross = None
        for (l0, s0), (l1, s1) in zip(pts, pts[1:]):
            if s0 < 1 <= s1:
                w = (0 - math.log(s0)) / (math.log(s1) - math.log(s0))
                cross = math.exp(math.log(l0) + w * (math.log(l1) - math.log(l0)))
        if pts and pts[0][1] >= 1:
            p(f"- r = {r}: faster already at L = {pts[0][0]} ({fmt(pts[0][1])}x)")
        elif cross:
            p(f"- r = {r}: about L = {cross:.0f}")
        else:
            p(f"- r = {r}: not within the measured lengths")
    p("")

    if peak:
        p(f"GEMM and core efficiency against the measured cuBLAS peak ({fmt(peak, 0)} TFLOP/s): the "
          "exact layer's three projections are 3·2·L·d² flops, the output 2·L·d² (the ATP layer's Q "
          "projection runs beside its basis, so it has no stage of its own).")
        p("")
        for L in lengths:
            s_ = exact.get(L, {}).get("stages", {})
            if s_.get("projections") and s_.get("output"):
                d = 4096
                pr = 6 * L * d * d / (s_["projections"] * 1e-3) / 1e12
                o = 2 * L * d * d / (s_["output"] * 1e-3) / 1e12
                cores = ", ".join(f"r={r} {fmt(row.get('core_tflops'), 0)}"
                                  for (l2, r), row in sorted(atp.items()) if l2 == L)
                p(f"- L={L}: exact layer projections {fmt(pr, 0)} TFLOP/s, output {fmt(o, 0)}, "
                  f"cuDNN core {fmt(exact[L].get('core_tflops'), 0)}; ATP core (L x r) {cores}")
        p("")

    ref = by(ours, "basis_reference")
    if ref:
        p(f"Principal basis variants at L = {ref[0]['L']}, r = {ref[0]['r']} (bf16; exact f64 "
          f"reference {fmt(ref[0]['ms'], 0)} ms, captured {fmt(ref[0]['captured'], 4)})")
        p("")
        p("| variant | total | gram | subspace: products | checks | CholeskyQR | rayleigh_ritz | "
          "eig | ritz+sign | σ max rel err | recon / optimum | products / passes / NS |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in by(ours, "basis_variant"):
            s = r["stages"]
            tail = (s.get("ritz_vectors") or 0) + (s.get("bases") or 0)
            chol = (s.get("subspace_cholqr") or 0) + (s.get("subspace") or 0)
            p(f"| {r['name']} | {fmt(s.get('total'), 3)} | {fmt(s.get('gram'), 3)} | "
              f"{fmt(s.get('subspace_products'), 3)} | {fmt(s.get('subspace_checks'), 3)} | "
              f"{fmt(chol, 3)} | {fmt(s.get('rayleigh_ritz'), 3)} | "
              f"{fmt(s.get('eig'), 3)} | {fmt(tail, 3)} | {r.get('sigma_max_rel_err', 0):.2e} | "
              f"{fmt(r.get('reconstruction_vs_optimum'), 4)} | "
              f"{r.get('products', '–')} / {r.get('cholqr_passes', '–')} / "
              f"{r.get('newton_schulz_steps', '–')} |")
        p("")
    lv = by(ours, "layer_variant")
    if lv:
        p(f"ATP layer at L = {lv[0]['L']}, r = {lv[0]['r']}: where the Q projection overlaps the "
          "basis (ms)")
        p("")
        p("| placement | basis (to eig) | total |")
        p("|---|---|---|")
        for r in lv:
            s = r["stages"]
            basis = sum(s.get(k) or 0 for k in ("gram", "subspace_products", "subspace_checks",
                                                "subspace_cholqr", "subspace", "rayleigh_ritz",
                                                "eig", "ritz_vectors", "bases"))
            p(f"| {r['name']} | {fmt(basis, 3)} | {fmt(s.get('total'), 3)} |")
        p("")
    micro = by(ours, "small_factorisation")
    if micro:
        p("Small factorisations, f32 (ms): " + "; ".join(
            f"n={m['n']}: " + ", ".join(f"{k} {fmt(v, 3)}" for k, v in m["ms"].items())
            for m in micro))
        p("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
