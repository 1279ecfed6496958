#!/usr/bin/python3
"""A client of atp-worker written from the .proto files alone, in another language (Python).

It starts the worker binary on 127.0.0.1 (CPU backend, OS-chosen port), registers layers with the
digest computed as worker.proto defines it, runs every operation and checks the results against an
independent NumPy (float64) implementation of DESIGN.md §1, sends garbage to every method, and
checks that the worker is still ready and exits 0 on SIGTERM.

Usage: foreign_client_test.py --worker PATH/atp-worker --stubs BUILD/proto/py
"""
import argparse
import hashlib
import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import unittest
import urllib.request

import numpy as np

ARGS = None
WORKER = None  # (process, port, metrics_port)

# ---- wire helpers written from tensor.proto / worker.proto ----------------------------------------

_CRC_TABLE = []
for _b in range(256):
    _c = _b
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for byte in data:
        c = (c >> 8) ^ _CRC_TABLE[(c ^ byte) & 0xFF]
    return c ^ 0xFFFFFFFF


DTYPES = {np.dtype(np.float32): 1, np.dtype(np.float16): 2}


def tensor_header(pb, name, array):
    array = np.ascontiguousarray(array)
    data = array.tobytes()
    return pb.TensorHeader(name=name, dtype=DTYPES[array.dtype], shape=list(array.shape),
                           byte_size=len(data), crc32c=crc32c(data))


def layer_digest(tensors, config_text):
    """SHA-256 as defined at atp.v1.LayerHeader."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(name.encode() + b"\x00" + bytes([DTYPES[a.dtype], a.ndim]))
        for d in a.shape:
            h.update(struct.pack("<q", d))
        h.update(a.tobytes())
    h.update(config_text.encode())
    return h.hexdigest()


def attention_config_text(d_model, heads, kv_heads, head_dim, key_scale):
    scale = np.float32(1) / np.sqrt(np.float32(head_dim))
    return (f"attention:d_model={d_model};num_heads={heads};num_kv_heads={kv_heads};"
            f"head_dim={head_dim};scale={float(scale):.9g};key_scale={key_scale}")


# ---- the math of DESIGN.md §1 in float64 -----------------------------------------------------------

def principal_bases(x, r):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    u, s, vt = u[:, :r].copy(), s[:r].copy(), vt[:r].copy()
    length = x.shape[0]
    for i in range(r):
        t = u[:, i].sum()
        if abs(t) < 1e-6 * np.sqrt(length):
            t = u[np.argmax(np.abs(u[:, i])), i]
        if t < 0:
            u[:, i] *= -1
            vt[i] *= -1
    return u, s, vt


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def attention(x, w, heads, kv_heads, head_dim, rank=None, causal=False, key_scale=0):
    x = x.astype(np.float64)
    w = {k: v.astype(np.float64) for k, v in w.items()}
    q = x @ w["q_proj.weight"].T + w["q_proj.bias"]
    if rank is None:  # exact
        k = x @ w["k_proj.weight"].T + w["k_proj.bias"]
        v = x @ w["v_proj.weight"].T + w["v_proj.bias"]
    else:
        u, s, vt = principal_bases(x, rank)
        c = 1.0 / np.sqrt(x.shape[0]) if key_scale == 1 else 1.0
        xt = c * (s[:, None] * vt)
        ones = c * u.sum(axis=0)
        k = xt @ w["k_proj.weight"].T + np.outer(ones, w["k_proj.bias"])
        v = xt @ w["v_proj.weight"].T + np.outer(ones, w["v_proj.bias"])
    group = heads // kv_heads
    outs = []
    for h in range(heads):
        g = h // group
        qh = q[:, h * head_dim:(h + 1) * head_dim]
        kh = k[:, g * head_dim:(g + 1) * head_dim]
        vh = v[:, g * head_dim:(g + 1) * head_dim]
        z = qh @ kh.T / np.sqrt(head_dim)
        if causal:
            z = z + np.triu(np.full(z.shape, -np.inf), 1)
        outs.append(softmax(z) @ vh)
    return np.concatenate(outs, axis=1) @ w["o_proj.weight"].T + w["o_proj.bias"]


def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return np.linalg.norm(got - want) / np.linalg.norm(want)


# ---- the tests ------------------------------------------------------------------------------------

def setUpModule():
    global WORKER
    cmd = [ARGS.worker, "--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0", "--backend=cpu",
           "--log-format=json", "--chunk-bytes=4096"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("atp-worker exited before it started")
        entry = json.loads(line)
        if entry.get("msg") == "worker started":
            WORKER = (proc, entry["port"], entry["metrics_port"])
            return
    raise RuntimeError("atp-worker did not report its port")


def tearDownModule():
    proc = WORKER[0]
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class ForeignClientTest(unittest.TestCase):
    HEADS, KV_HEADS, HEAD_DIM, D = 4, 2, 4, 16

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, ARGS.stubs)
        global tensor_pb2, worker_pb2, worker_pb2_grpc, grpc
        import grpc
        from atp.v1 import tensor_pb2, worker_pb2, worker_pb2_grpc
        # grpc/health/v1 would collide with the grpc package: load it by path.
        spec = importlib.util.spec_from_file_location(
            "health_pb2", os.path.join(ARGS.stubs, "grpc", "health", "v1", "health_pb2.py"))
        cls.health_pb2 = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cls.health_pb2)
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{WORKER[1]}")
        cls.stub = worker_pb2_grpc.WorkerStub(cls.channel)
        rng = np.random.default_rng(20261127)
        d, h, kv, hd = cls.D, cls.HEADS, cls.KV_HEADS, cls.HEAD_DIM
        cls.attn = {
            "q_proj.weight": rng.normal(0, 0.3, (h * hd, d)), "q_proj.bias": rng.normal(0, 0.1, h * hd),
            "k_proj.weight": rng.normal(0, 0.3, (kv * hd, d)), "k_proj.bias": rng.normal(0, 0.1, kv * hd),
            "v_proj.weight": rng.normal(0, 0.3, (kv * hd, d)), "v_proj.bias": rng.normal(0, 0.1, kv * hd),
            "o_proj.weight": rng.normal(0, 0.3, (d, h * hd)), "o_proj.bias": rng.normal(0, 0.1, d),
        }
        cls.attn = {k: v.astype(np.float32) for k, v in cls.attn.items()}
        cls.lin = {"weight": rng.normal(0, 0.3, (11, d)).astype(np.float32),
                   "bias": rng.normal(0, 0.1, 11).astype(np.float32)}
        cls.x = rng.normal(0, 1, (40, d)).astype(np.float32)
        cls.register("attn", cls.attn, attention=True)
        cls.register("lin", cls.lin, attention=False)

    @classmethod
    def register(cls, layer_id, tensors, attention, digest=True):
        names = sorted(tensors)
        header = worker_pb2.LayerHeader(layer_id=layer_id,
                                        tensors=[tensor_header(tensor_pb2, n, tensors[n]) for n in names])
        if attention:
            header.attention.CopyFrom(worker_pb2.AttentionConfig(
                d_model=cls.D, num_heads=cls.HEADS, num_kv_heads=cls.KV_HEADS, head_dim=cls.HEAD_DIM))
            text = attention_config_text(cls.D, cls.HEADS, cls.KV_HEADS, cls.HEAD_DIM, 0)
        else:
            header.linear.CopyFrom(worker_pb2.LinearConfig())
            text = "linear"
        want = layer_digest(tensors, text)
        if digest:
            header.digest = want

        def messages():
            yield worker_pb2.RegisterLayerRequest(header=header)
            for i, n in enumerate(names):
                data = np.ascontiguousarray(tensors[n]).tobytes()
                for off in range(0, len(data), 3000):
                    yield worker_pb2.RegisterLayerRequest(chunk=tensor_pb2.Chunk(
                        tensor_index=i, offset=off, data=data[off:off + 3000]))

        response = cls.stub.RegisterLayer(messages(), timeout=30)
        assert response.layer.digest == want, (response.layer.digest, want)
        return response

    def compute(self, requests):
        """Sends (header, [arrays]) pairs on one stream; returns (ResponseHeader, [arrays]) pairs."""
        def messages():
            for header, inputs in requests:
                yield worker_pb2.ComputeRequest(header=header)
                for index, a in enumerate(inputs):
                    data = np.ascontiguousarray(a).tobytes()
                    for off in range(0, len(data), 1000):
                        yield worker_pb2.ComputeRequest(chunk=tensor_pb2.Chunk(
                            request_id=header.request_id, tensor_index=index, offset=off,
                            data=data[off:off + 1000]))

        results = []
        current, buffers = None, []
        for msg in self.stub.Compute(messages(), timeout=60):
            if msg.HasField("header"):
                current, buffers = msg.header, [bytearray() for _ in msg.header.outputs]
            else:
                self.assertEqual(msg.chunk.request_id, current.request_id)
                self.assertEqual(msg.chunk.offset, len(buffers[msg.chunk.tensor_index]))
                buffers[msg.chunk.tensor_index] += msg.chunk.data
            if current is not None and all(
                    len(b) == o.byte_size for b, o in zip(buffers, current.outputs)):
                arrays = []
                for b, o in zip(buffers, current.outputs):
                    self.assertEqual(crc32c(bytes(b)), o.crc32c)
                    dt = {1: np.float32, 2: np.float16}[o.dtype]
                    arrays.append(np.frombuffer(bytes(b), dtype=dt).reshape(tuple(o.shape)))
                results.append((current, arrays))
                current = None
        return results

    def dense(self, request_id, op_field, op, x):
        header = worker_pb2.RequestHeader(request_id=request_id)
        getattr(header, op_field).CopyFrom(op)
        header.input.dense.CopyFrom(tensor_header(tensor_pb2, "x", x))
        return header

    def test_every_operation_matches_numpy(self):
        x, r = self.x, 5
        fixed = worker_pb2.RankPolicy(fixed=r)
        u_in = np.linalg.svd(x.astype(np.float64), full_matrices=False)[0][:, :3].astype(np.float32)
        c_in = np.random.default_rng(3).normal(0, 1, (3, self.D)).astype(np.float32)
        factored = worker_pb2.RequestHeader(
            request_id=7, lowrank_linear=worker_pb2.LowRankLinearOp(
                layer_id="lin", output_form=worker_pb2.OUTPUT_FORM_FACTORED))
        factored.input.factored.u.CopyFrom(tensor_header(tensor_pb2, "u", u_in))
        factored.input.factored.c.CopyFrom(tensor_header(tensor_pb2, "c", c_in))
        requests = [
            (self.dense(1, "atp_attention", worker_pb2.AtpAttentionOp(layer_id="attn", rank=fixed), x), [x]),
            (self.dense(2, "exact_attention", worker_pb2.ExactAttentionOp(layer_id="attn"), x), [x]),
            (self.dense(3, "exact_attention", worker_pb2.ExactAttentionOp(layer_id="attn", causal=True), x), [x]),
            (self.dense(4, "decompose", worker_pb2.DecomposeOp(rank=fixed), x), [x]),
            (self.dense(5, "lowrank_linear", worker_pb2.LowRankLinearOp(layer_id="lin", rank=fixed), x), [x]),
            (self.dense(6, "lowrank_linear", worker_pb2.LowRankLinearOp(
                layer_id="attn", weight="v_proj", rank=fixed), x), [x]),
            (factored, [u_in, c_in]),
        ]
        results = self.compute(requests)
        self.assertEqual([h.request_id for h, _ in results], [1, 2, 3, 4, 5, 6, 7])
        for header, _ in results:
            self.assertEqual(header.code, 0, header.message)
        by_id = {h.request_id: (h, a) for h, a in results}

        w = self.attn
        want = attention(x, w, self.HEADS, self.KV_HEADS, self.HEAD_DIM, rank=r)
        self.assertEqual(by_id[1][0].rank, r)
        self.assertLess(rel_err(by_id[1][1][0], want), 1e-4)
        self.assertLess(rel_err(by_id[2][1][0], attention(x, w, self.HEADS, self.KV_HEADS, self.HEAD_DIM)), 1e-4)
        self.assertLess(rel_err(by_id[3][1][0], attention(x, w, self.HEADS, self.KV_HEADS, self.HEAD_DIM,
                                                         causal=True)), 1e-4)
        u, s, vt = principal_bases(x.astype(np.float64), r)
        got_u, got_s, got_vt = by_id[4][1]
        self.assertLess(rel_err(got_s, s), 1e-5)
        self.assertLess(rel_err(got_u, u), 1e-4)
        self.assertLess(rel_err(got_vt, vt), 1e-4)
        energy = (s ** 2).sum() / (x.astype(np.float64) ** 2).sum()
        self.assertAlmostEqual(by_id[4][0].captured_energy, energy, places=5)
        approx = (u * s) @ vt
        self.assertLess(rel_err(by_id[5][1][0], approx @ self.lin["weight"].T + self.lin["bias"]), 1e-4)
        self.assertLess(rel_err(by_id[6][1][0], approx @ w["v_proj.weight"].T.astype(np.float64)
                                + w["v_proj.bias"]), 1e-4)
        up, cp = by_id[7][1]
        self.assertEqual(up.shape, (40, 4))  # [U, 1]: the layer has a bias
        want7 = u_in.astype(np.float64) @ c_in @ self.lin["weight"].T.astype(np.float64) + self.lin["bias"]
        self.assertLess(rel_err(up.astype(np.float64) @ cp, want7), 1e-4)

    def test_half_precision_input_gives_half_precision_output(self):
        x = self.x.astype(np.float16)
        results = self.compute([(self.dense(1, "exact_attention", worker_pb2.ExactAttentionOp(layer_id="attn"), x), [x])])
        header, (y,) = results[0]
        self.assertEqual(header.code, 0, header.message)
        self.assertEqual(y.dtype, np.float16)
        want = attention(x.astype(np.float32), self.attn, self.HEADS, self.KV_HEADS, self.HEAD_DIM)
        self.assertLess(rel_err(y, want), 2e-2)

    def test_registration_is_idempotent_and_listed(self):
        again = self.register("lin", self.lin, attention=False, digest=False)
        self.assertTrue(again.already_registered)
        listed = self.stub.ListLayers(worker_pb2.ListLayersRequest(), timeout=10)
        self.assertEqual(sorted(l.layer_id for l in listed.layers), ["attn", "lin"])

    def test_bad_requests_get_clear_in_band_errors(self):
        x = self.x
        wide = np.zeros((4, self.D + 1), np.float32)
        nan = x.copy()
        nan[3, 3] = np.nan
        results = self.compute([
            (self.dense(1, "exact_attention", worker_pb2.ExactAttentionOp(layer_id="ghost"), x), [x]),
            (self.dense(2, "exact_attention", worker_pb2.ExactAttentionOp(layer_id="attn"), wide), [wide]),
            (self.dense(3, "decompose", worker_pb2.DecomposeOp(rank=worker_pb2.RankPolicy(fixed=2)), nan), [nan]),
            (self.dense(4, "decompose", worker_pb2.DecomposeOp(rank=worker_pb2.RankPolicy(fixed=2)), x), [x]),
        ])
        codes = [(h.request_id, h.code) for h, _ in results]
        self.assertEqual(codes, [(1, 5), (2, 3), (3, 3), (4, 0)])  # NOT_FOUND, INVALID_ARGUMENT, OK
        self.assertIn('"ghost"', results[0][0].message)
        self.assertIn("want [L,16]", results[1][0].message)

    def test_garbage_to_every_method_is_invalid_argument_and_the_worker_stays_ready(self):
        garbage = b"\x0f\xff\xfe\x00garbage"
        for method, kind in [("/atp.v1.Worker/GetServerInfo", "unary_unary"),
                             ("/atp.v1.Worker/RegisterLayer", "stream_unary"),
                             ("/atp.v1.Worker/ListLayers", "unary_unary"),
                             ("/atp.v1.Worker/RemoveLayer", "unary_unary"),
                             ("/atp.v1.Worker/Compute", "stream_stream"),
                             ("/atp.v1.Worker/GetStatistics", "unary_unary"),
                             ("/grpc.health.v1.Health/Check", "unary_unary"),
                             ("/grpc.health.v1.Health/Watch", "unary_stream")]:
            call = getattr(self.channel, kind)(method)  # no serializers: raw bytes
            with self.assertRaises(grpc.RpcError) as caught:
                if kind == "unary_unary":
                    call(garbage, timeout=10)
                elif kind == "unary_stream":
                    list(call(garbage, timeout=10))
                elif kind == "stream_unary":
                    call(iter([garbage]), timeout=10)
                else:
                    list(call(iter([garbage]), timeout=10))
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, method)
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=self.health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=self.health_pb2.HealthCheckResponse.FromString)
        for service in ("", "atp.v1.Worker"):
            status = check(self.health_pb2.HealthCheckRequest(service=service), timeout=10).status
            self.assertEqual(status, self.health_pb2.HealthCheckResponse.SERVING)
        info = self.stub.GetServerInfo(worker_pb2.GetServerInfoRequest(), timeout=10)
        self.assertEqual(info.backend, "cpu")
        self.assertEqual(info.limits.chunk_bytes, 4096)

    def test_zz_metrics_and_statistics_then_sigterm_exits_zero(self):
        stats = self.stub.GetStatistics(worker_pb2.GetStatisticsRequest(), timeout=10)
        self.assertGreater({o.op: o.requests for o in stats.ops}["exact_attention"], 0)
        page = urllib.request.urlopen(f"http://127.0.0.1:{WORKER[2]}/metrics", timeout=10).read().decode()
        self.assertIn('atp_requests_total{op="exact_attention"}', page)
        self.assertIn('atp_request_errors_total{code="NOT_FOUND",op="exact_attention"} 1', page)
        proc = WORKER[0]
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--stubs", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
