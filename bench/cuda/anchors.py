#!/usr/bin/env python3
"""PyTorch anchors for the CUDA benchmark, measured on the same GPU in the same run.

bf16, d = 4096 (32 heads x 128), one sequence, non-causal:
  * the cuBLAS bf16 GEMM peak (torch.matmul, 8192^3);
  * the exact attention core through SDPA with the cuDNN backend and with the flash backend;
  * the exact layer (four nn.Linear-style projections without bias + cuDNN SDPA), per stage;
  * a plain PyTorch ATP layer: torch.svd_lowrank (f32, niter=2) + the same projections + SDPA
    over the r principal keys (cuDNN), per stage.
Times: CUDA events, warm-up, median. One JSON object per line on stdout and in --json.
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", default="4096,16384,32768,65536")
    p.add_argument("--ranks", default="256,512,1024")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=7)
    p.add_argument("--json", default="")
    args = p.parse_args()
    lengths = [int(v) for v in args.lengths.split(",") if v]
    ranks = [int(v) for v in args.ranks.split(",") if v]
    out = open(args.json, "w") if args.json else None

    def emit(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    d, heads, head_dim = 4096, 32, 128

    def timed(stage_fns, iters=None):
        """Runs the stages in order; per-stage and total medians in ms."""
        iters = iters or args.iters
        samples = {name: [] for name, _ in stage_fns}
        samples["total"] = []
        for i in range(args.warmup + iters):
            events = [torch.cuda.Event(enable_timing=True) for _ in range(len(stage_fns) + 1)]
            events[0].record()
            for k, (name, fn) in enumerate(stage_fns):
                fn()
                events[k + 1].record()
            events[-1].synchronize()
            if i < args.warmup:
                continue
            for k, (name, _) in enumerate(stage_fns):
                samples[name].append(events[k].elapsed_time(events[k + 1]))
            samples["total"].append(events[0].elapsed_time(events[-1]))
        return {k: statistics.median(v) for k, v in samples.items()}

    emit({"kind": "torch_device", "name": torch.cuda.get_device_name(0),
          "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()})

    # cuBLAS peak.
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    t = timed([("gemm", lambda: torch.matmul(a, b))], iters=10)
    emit({"kind": "torch_peak", "what": "matmul_bf16_8192", "ms": t["gemm"],
          "tflops": 2 * n ** 3 / (t["gemm"] * 1e-3) / 1e12})
    del a, b

    gen = torch.Generator(device=dev)
    gen.manual_seed(1)

    def weight(rows, cols):
        return (torch.randn(rows, cols, device=dev, generator=gen) / cols ** 0.5).to(torch.bfloat16)

    wq, wk, wv, wo = (weight(d, d) for _ in range(4))

    def heads_view(m):  # [L, H*dh] -> [1, H, L, dh]
        return m.view(m.shape[0], heads, head_dim).transpose(0, 1).unsqueeze(0)

    def merge(o):  # [1, H, L, dh] -> [L, H*dh]
        return o.squeeze(0).transpose(0, 1).reshape(o.shape[2], heads * head_dim)

    for L in lengths:
        iters = 3 if L >= 65536 else None
        x = torch.randn(L, d, device=dev, dtype=torch.bfloat16)
        q = heads_view(x @ wq.T)
        k = heads_view(x @ wk.T)
        v = heads_view(x @ wv.T)
        flops = 4.0 * L * L * heads * head_dim
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    t = timed([("core", lambda: F.scaled_dot_product_attention(q, k, v))],
                              iters=iters)
                emit({"kind": "torch_sdpa", "L": L, "backend": name, "ms": t["core"],
                      "tflops": flops / (t["core"] * 1e-3) / 1e12})
            except Exception as e:  # noqa: BLE001 - report and go on
                emit({"kind": "torch_sdpa", "L": L, "backend": name, "error": str(e)[:300]})
        del q, k, v

        st = {}

        def proj():
            st["q"] = heads_view(x @ wq.T)
            st["k"] = heads_view(x @ wk.T)
            st["v"] = heads_view(x @ wv.T)

        def core():
            st["o"] = F.scaled_dot_product_attention(st["q"], st["k"], st["v"])

        def output():
            st["y"] = merge(st["o"]) @ wo.T

        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            t = timed([("projections", proj), ("core", core), ("output", output)], iters=iters)
        emit({"kind": "torch_exact_layer", "L": L, "stages": t})
        st.clear()

        for r in ranks:
            def basis():
                _, s, vmat = torch.svd_lowrank(x.float(), q=r, niter=2)
                st["xt"] = (s[:, None] * vmat.T).to(torch.bfloat16)

            def atp_proj():
                st["q"] = heads_view(x @ wq.T)
                st["k"] = heads_view(st["xt"] @ wk.T)
                st["v"] = heads_view(st["xt"] @ wv.T)

            try:
                with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                    t = timed([("basis", basis), ("projections", atp_proj), ("core", core),
                               ("output", output)], iters=iters)
                emit({"kind": "torch_atp_layer", "L": L, "r": r, "stages": t})
            except Exception as e:  # noqa: BLE001
                emit({"kind": "torch_atp_layer", "L": L, "r": r, "error": str(e)[:300]})
            st.clear()
        del x
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
