#!/usr/bin/python3
"""End-to-end tests of the `atp` binary on files in a temporary directory.

Every op is checked against reference.py, an independent float64 NumPy implementation of
DESIGN.md section 1, on fresh random layers and inputs: relative Frobenius error <= 1e-4 for float32
outputs. Error cases check the exit status (2 for a bad command line, 1 for a bad file or a failed
computation), that stderr is exactly one line, and that no output file appears.

Usage: cli_test.py PATH/TO/atp [unittest arguments, e.g. a TestCase name]
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

ATP = None  # set from argv in main
TOL_F32 = 1e-4
TOL_F16_OUTPUT = 1e-3  # f16 rounds to 2^-11 relative per element
RUN_TIMEOUT_S = 60


def parse_fields(line):
    """'rank=3 energy=0.5 output=Y.npy' -> {'rank': '3', ...}."""
    return dict(re.findall(r"(\w+)=(\S+)", line))


class CliTestCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="atp_cli_test_")
        self.dir = self._tmp.name
        # A fresh but reproducible stream per test: failures can be replayed.
        self.rng = np.random.default_rng(zlib.crc32(self.id().encode()))

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def run_atp(self, *args):
        proc = subprocess.run([ATP, *map(str, args)], capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        return proc.returncode, proc.stdout, proc.stderr

    def atp(self, *args):
        """Runs atp, expects success and one line on stdout; returns its key=value fields."""
        code, out, err = self.run_atp(*args)
        self.assertEqual(code, 0, f"atp {' '.join(map(str, args))} failed: {err}")
        self.assertEqual(err, "")
        lines = out.splitlines()
        self.assertEqual(len(lines), 1, out)
        return parse_fields(lines[0])

    def atp_fail(self, want_code, *args, want_text=None, outputs=()):
        """Runs atp, expects exit `want_code` with one line on stderr (containing `want_text`),
        nothing on stdout, and none of `outputs` written."""
        code, out, err = self.run_atp(*args)
        cmd = f"atp {' '.join(map(str, args))}"
        self.assertEqual(code, want_code, f"{cmd}: exit {code}, stderr: {err!r}")
        self.assertEqual(out, "", cmd)
        self.assertTrue(err.endswith("\n"), f"{cmd}: {err!r}")
        self.assertEqual(err.count("\n"), 1, f"{cmd}: want one line on stderr, got {err!r}")
        self.assertGreater(len(err.strip()), 10, cmd)
        if want_text is not None:
            self.assertIn(want_text, err, cmd)
        for name in outputs:
            self.assertFalse(os.path.exists(name), f"{cmd} left {name}")
        return err.strip()

    # -- Test data ------------------------------------------------------------------------------

    def make_layer(self, d, heads, kv_heads=None, head_dim=None, bias=False, key_scale=None,
                   dtype="F32", default_rank=None, metadata_extra=None, name="layer.safetensors"):
        """A random attention layer written with reference.py's own safetensors writer."""
        kv_heads = kv_heads or heads
        head_dim = head_dim or d // heads
        rows = {"q_proj": (heads * head_dim, d), "k_proj": (kv_heads * head_dim, d),
                "v_proj": (kv_heads * head_dim, d), "o_proj": (d, heads * head_dim)}
        tensors = {}
        for proj, (n, k) in rows.items():
            tensors[f"{proj}.weight"] = self.rng.normal(0, 1 / np.sqrt(k), size=(n, k))
            if bias:
                tensors[f"{proj}.bias"] = self.rng.normal(0, 0.5, size=n)
        metadata = {"num_heads": heads, "num_kv_heads": kv_heads, "head_dim": head_dim}
        if key_scale is not None:
            metadata["key_scale"] = key_scale
        if default_rank is not None:
            metadata["default_rank"] = default_rank
        metadata.update(metadata_extra or {})
        path = self.path(name)
        R.write_safetensors(path, tensors, metadata, dtype=dtype)
        return path

    def make_linear(self, d_in, d_out, bias=False, default_rank=None, name="linear.safetensors"):
        tensors = {"weight": self.rng.normal(0, 1 / np.sqrt(d_in), size=(d_out, d_in))}
        if bias:
            tensors["bias"] = self.rng.normal(0, 0.5, size=d_out)
        metadata = {"default_rank": default_rank} if default_rank else None
        path = self.path(name)
        R.write_safetensors(path, tensors, metadata)
        return path

    def spectrum_input(self, L, d):
        """X = A diag(s) B^T with singular values spaced evenly (s_i = m - i), so that every
        singular vector is well conditioned; scaled to an rms entry of 1."""
        m = min(L, d)
        a, _ = np.linalg.qr(self.rng.normal(size=(L, m)))
        b, _ = np.linalg.qr(self.rng.normal(size=(d, m)))
        s = np.arange(m, 0, -1, dtype=np.float64)
        x = (a * s) @ b.T
        return x / np.sqrt((x * x).mean())

    def save_input(self, x, name="x.npy", dtype=np.float32):
        path = self.path(name)
        np.save(path, np.ascontiguousarray(x, dtype=dtype))
        return path


def rank_args(policy):
    """Command-line options for a reference.Policy (None: no options, the layer's default)."""
    if policy is None:
        return []
    flag = {"fixed": "--rank", "fraction": "--rank-fraction", "energy": "--rank-energy"}
    args = [flag[policy.kind], policy.value]
    if policy.max_rank:
        args += ["--max-rank", policy.max_rank]
    return args


# ================================================================================================
# Ops against the reference.


class OpTestCase(CliTestCase):
    def check_rank(self, fields, policy, sigma, r_ref, e_ref):
        """Checks rank= and energy=; returns the rank the CLI used."""
        r = int(fields["rank"])
        if r != r_ref:
            self.assertTrue(R.energy_is_ambiguous(policy, sigma, r_ref),
                            f"rank {r}, reference {r_ref} for policy {policy}")
        else:
            self.assertAlmostEqual(float(fields["energy"]), e_ref, delta=5e-6)
        return r

    def check_output(self, path, want, dtype, tol):
        got = np.load(path)
        self.assertEqual(got.dtype, np.dtype(dtype))
        self.assertEqual(got.shape, want.shape)
        self.assertTrue(np.isfinite(got).all())
        err = R.rel_error(got, want)
        self.assertLessEqual(err, tol, f"relative error {err:.3g} > {tol}")
        return err

    def run_atp_attention(self, layer_path, x_path, policy, output_dtype="f32", extra=()):
        y_path = self.path("y.npy")
        fields = self.atp("run", "atp-attention", "--layer", layer_path, "--input", x_path,
                          *rank_args(policy), "--output", y_path, "--output-dtype", output_dtype,
                          *extra)
        layer = R.Layer(layer_path)
        x = np.load(x_path).astype(np.float64)
        eff_policy = policy or layer.default_rank
        y_ref, r_ref, e_ref = R.atp_attention(layer, x, eff_policy)
        _, sigma, _ = R.svd(x)
        r = self.check_rank(fields, eff_policy, sigma, r_ref, e_ref)
        if r != r_ref:
            y_ref, _, _ = R.atp_attention(layer, x, rank=r)
        tol = TOL_F32 if output_dtype == "f32" else TOL_F16_OUTPUT
        dtype = np.float32 if output_dtype == "f32" else np.float16
        self.assertEqual(fields["shape"], f"[{x.shape[0]},{layer.d_model}]")
        return self.check_output(y_path, y_ref, dtype, tol), r


class AtpAttentionTest(OpTestCase):
    def test_matches_reference_across_shapes_heads_biases_and_key_scales(self):
        # (L, d, heads, kv_heads, head_dim): L = 1, L < d, L > d, odd sizes, heads*head_dim != d,
        # grouped KV heads (2 and 1 groups) and plain multi-head.
        shapes = [(1, 8, 2, 1, 4), (5, 12, 3, 3, 4), (37, 10, 2, 2, 5), (17, 9, 3, 1, 7),
                  (48, 32, 8, 2, 4), (23, 16, 4, 2, 3)]
        for i, (L, d, H, G, dh) in enumerate(shapes):
            for bias in (False, True):
                for key_scale in ("none", "inv_sqrt_len"):
                    with self.subTest(L=L, d=d, H=H, G=G, dh=dh, bias=bias, key_scale=key_scale):
                        layer = self.make_layer(d, H, G, dh, bias=bias, key_scale=key_scale)
                        x = self.save_input(self.spectrum_input(L, d))
                        m = min(L, d)
                        policy = R.Policy("fixed", [1, m, max(1, m // 2)][(i + bias) % 3])
                        self.run_atp_attention(layer, x, policy)

    def test_each_rank_policy_and_max_rank(self):
        L, d = 40, 24
        layer = self.make_layer(d, 4, 2, bias=True)
        x = self.save_input(self.spectrum_input(L, d))
        policies = [R.Policy("fixed", 5), R.Policy("fixed", 24), R.Policy("fixed", 1000),
                    R.Policy("fraction", "0.3"), R.Policy("fraction", "1"),
                    R.Policy("fraction", "0.01"), R.Policy("energy", "0.9"),
                    R.Policy("energy", "0.5"), R.Policy("energy", "1"),
                    R.Policy("fixed", 20, max_rank=7), R.Policy("energy", "0.99", max_rank=3),
                    R.Policy("fraction", "0.5", max_rank=11)]
        for policy in policies:
            with self.subTest(policy=repr(policy)):
                _, r = self.run_atp_attention(layer, x, policy)
                self.assertGreaterEqual(r, 1)
                self.assertLessEqual(r, min(L, d, policy.max_rank or 10**9))

    def test_uses_the_layer_default_rank_and_max_rank_without_a_policy(self):
        x = self.save_input(self.spectrum_input(30, 16))
        plain = self.make_layer(16, 4, name="plain.safetensors")  # default energy 0.99
        _, r = self.run_atp_attention(plain, x, None)
        self.assertEqual(r, R.resolve_rank(R.Policy("energy", "0.99"), 30, 16,
                                           R.svd(np.load(x))[1]))
        fixed = self.make_layer(16, 4, default_rank="fixed 3", name="fixed.safetensors")
        _, r = self.run_atp_attention(fixed, x, None)
        self.assertEqual(r, 3)
        # --max-rank alone bounds the layer's default policy.
        y = self.path("y.npy")
        fields = self.atp("run", "atp-attention", "--layer", plain, "--input", x,
                          "--max-rank", 2, "--output", y)
        self.assertEqual(fields["rank"], "2")
        layer = R.Layer(plain)
        want, _, _ = R.atp_attention(layer, np.load(x), R.Policy("energy", "0.99", 2))
        self.check_output(y, want, np.float32, TOL_F32)

    def test_low_precision_weights_inputs_and_outputs(self):
        L, d = 21, 12
        for dtype in ("F16", "BF16"):
            with self.subTest(weights=dtype):
                layer = self.make_layer(d, 3, 1, bias=True, key_scale="inv_sqrt_len",
                                        dtype=dtype, name=f"{dtype}.safetensors")
                x = self.save_input(self.spectrum_input(L, d))
                self.run_atp_attention(layer, x, R.Policy("fixed", 6))
        layer = self.make_layer(d, 3, 3, bias=True)
        x16 = self.save_input(self.spectrum_input(L, d), "x16.npy", np.float16)
        with self.subTest(input="f16"):
            self.run_atp_attention(layer, x16, R.Policy("fixed", 4))
        with self.subTest(output="f16"):
            self.run_atp_attention(layer, x16, R.Policy("fixed", 4), output_dtype="f16")

    def test_identical_tokens_with_inv_sqrt_len_equal_exact_attention_at_rank_one(self):
        # DESIGN.md: with key scale inv_sqrt_len a sequence of identical tokens has its one
        # principal token equal to that token, so ATP at r = 1 is exact attention.
        d = 12
        layer = self.make_layer(d, 4, 2, bias=True, key_scale="inv_sqrt_len")
        x = self.save_input(np.tile(self.rng.normal(size=d), (9, 1)))
        self.run_atp_attention(layer, x, R.Policy("fixed", 1))
        self.atp("run", "exact-attention", "--layer", layer, "--input", x, "--output",
                 self.path("exact.npy"))
        self.assertLessEqual(R.rel_error(np.load(self.path("y.npy")),
                                         np.load(self.path("exact.npy"))), TOL_F32)

    def test_sign_rule_fallback_when_tokens_sum_to_zero(self):
        # X = [Z; -2Z; Z]: every 1^T u_i is 0, so the largest-magnitude entry decides the sign.
        z = self.rng.normal(size=(4, 10))
        x = self.save_input(np.concatenate([z, -2 * z, z]))
        layer = self.make_layer(10, 2, bias=True)
        self.run_atp_attention(layer, x, R.Policy("fixed", 3))


class ExactAttentionTest(OpTestCase):
    def test_matches_reference_causal_and_not(self):
        shapes = [(1, 8, 2, 1, 4), (6, 12, 3, 3, 4), (29, 10, 2, 2, 5), (17, 9, 3, 1, 7)]
        for L, d, H, G, dh in shapes:
            for bias in (False, True):
                for causal in (False, True):
                    with self.subTest(L=L, d=d, H=H, G=G, dh=dh, bias=bias, causal=causal):
                        layer = self.make_layer(d, H, G, dh, bias=bias)
                        x = self.save_input(self.rng.normal(size=(L, d)))
                        y = self.path("y.npy")
                        args = ["run", "exact-attention", "--layer", layer, "--input", x,
                                "--output", y] + (["--causal"] if causal else [])
                        fields = self.atp(*args)
                        self.assertEqual(fields["causal"], "1" if causal else "0")
                        self.assertNotIn("rank", fields)
                        want = R.exact_attention(R.Layer(layer), np.load(x), causal)
                        self.check_output(y, want, np.float32, TOL_F32)

    def test_causal_first_token_sees_only_itself(self):
        layer = self.make_layer(8, 2, bias=True)
        x = self.rng.normal(size=(5, 8))
        full = self.save_input(x, "full.npy")
        first = self.save_input(x[:1], "first.npy")
        self.atp("run", "exact-attention", "--layer", layer, "--input", full, "--causal",
                 "--output", self.path("yc.npy"))
        self.atp("run", "exact-attention", "--layer", layer, "--input", first, "--output",
                 self.path("y1.npy"))
        self.assertLessEqual(R.rel_error(np.load(self.path("yc.npy"))[:1],
                                         np.load(self.path("y1.npy"))), 1e-6)


class LowRankLinearTest(OpTestCase):
    def run_lowrank(self, layer_path, weight, x_path, policy):
        y = self.path("y.npy")
        args = ["run", "lowrank-linear", "--layer", layer_path, "--input", x_path,
                *rank_args(policy), "--output", y]
        if weight:
            args += ["--weight", weight]
        fields = self.atp(*args)
        layer = R.Layer(layer_path)
        x = np.load(x_path).astype(np.float64)
        eff = policy or layer.default_rank
        want, r_ref, e_ref = R.lowrank_linear(layer, weight, x, eff)
        r = self.check_rank(fields, eff, R.svd(x)[1], r_ref, e_ref)
        if r != r_ref:
            want, _, _ = R.lowrank_linear(layer, weight, x, rank=r)
        self.check_output(y, want, np.float32, TOL_F32)
        return r

    def test_linear_layer_with_and_without_bias_each_policy(self):
        for L, d, n in [(1, 5, 3), (30, 12, 7), (9, 20, 20)]:
            for bias in (False, True):
                layer = self.make_linear(d, n, bias=bias)
                x = self.save_input(self.spectrum_input(L, d))
                m = min(L, d)
                for policy in (R.Policy("fixed", max(1, m // 2)), R.Policy("fixed", m),
                               R.Policy("fraction", "0.4"), R.Policy("energy", "0.8"),
                               R.Policy("energy", "0.95", max_rank=2), None):
                    with self.subTest(L=L, d=d, n=n, bias=bias, policy=repr(policy)):
                        self.run_lowrank(layer, "", x, policy)

    def test_full_rank_equals_the_dense_layer(self):
        layer = self.make_linear(10, 6, bias=True)
        x = self.rng.normal(size=(15, 10))
        x_path = self.save_input(x)
        self.run_lowrank(layer, "", x_path, R.Policy("fixed", 10))
        w, b = R.Layer(layer).linear("")
        dense = x.astype(np.float32).astype(np.float64) @ w.T + b
        self.assertLessEqual(R.rel_error(np.load(self.path("y.npy")), dense), TOL_F32)

    def test_maps_of_an_attention_layer(self):
        layer = self.make_layer(12, 3, 1, head_dim=5, bias=True, default_rank="fixed 4")
        x12 = self.save_input(self.spectrum_input(20, 12), "x12.npy")
        x15 = self.save_input(self.spectrum_input(20, 15), "x15.npy")  # o_proj input: 3 heads * 5
        for weight, x in (("q_proj", x12), ("k_proj", x12), ("v_proj", x12), ("o_proj", x15)):
            with self.subTest(weight=weight):
                self.assertEqual(self.run_lowrank(layer, weight, x, None), 4)
                self.run_lowrank(layer, weight, x, R.Policy("energy", "0.7"))


    def test_factored_input_and_output(self):
        L, r, d, n = 20, 4, 12, 7
        u_path = self.save_input(self.rng.normal(size=(L, r)), "u.npy")
        c_path = self.save_input(self.rng.normal(size=(r, d)), "c.npy")
        u = np.load(u_path).astype(np.float64)
        c = np.load(c_path).astype(np.float64)
        y, prefix = self.path("y.npy"), self.path("p")
        for bias in (False, True):
            layer = self.make_linear(d, n, bias=bias)
            want = R.lowrank_linear_factored(R.Layer(layer), "", u, c)
            factored_in = ("run", "lowrank-linear", "--layer", layer, "--input-u", u_path,
                           "--input-c", c_path)
            with self.subTest(bias=bias, output="dense"):
                fields = self.atp(*factored_in, "--output", y)
                self.assertEqual(fields["rank"], str(r))
                self.assertNotIn("energy", fields)  # nothing was decomposed
                self.check_output(y, want, np.float32, TOL_F32)
            with self.subTest(bias=bias, output="factored"):
                fields = self.atp(*factored_in, "--output-prefix", prefix)
                yu, yc = np.load(prefix + ".u.npy"), np.load(prefix + ".c.npy")
                rp = r + 1 if bias else r  # U' = [U, 1], C' = [C W^T; b^T] with a bias
                self.assertEqual((fields["u"], fields["c"]), (f"[{L},{rp}]", f"[{rp},{n}]"))
                self.assertEqual(fields["output"], f"{prefix}.u.npy,{prefix}.c.npy")
                self.assertEqual((yu.shape, yc.shape), ((L, rp), (rp, n)))
                if bias:
                    np.testing.assert_array_equal(yu[:, -1], np.ones(L, dtype=np.float32))
                product = yu.astype(np.float64) @ yc.astype(np.float64)
                self.assertLessEqual(R.rel_error(product, want), TOL_F32)
        # A dense input with a factored output: the factors multiply to the dense output.
        x = self.save_input(self.spectrum_input(15, d))
        self.atp("run", "lowrank-linear", "--layer", layer, "--input", x, "--rank", 5,
                 "--output", y)
        fields = self.atp("run", "lowrank-linear", "--layer", layer, "--input", x, "--rank", 5,
                          "--output-prefix", prefix)
        self.assertEqual(fields["rank"], "5")
        self.assertIn("energy", fields)
        product = np.load(prefix + ".u.npy").astype(np.float64) @ np.load(prefix + ".c.npy")
        self.assertLessEqual(R.rel_error(product, np.load(y)), 1e-5)


class DecomposeTest(OpTestCase):
    def run_decompose(self, x_path, policy, output_dtype="f32", extra=()):
        prefix = self.path("p")
        fields = self.atp("run", "decompose", "--input", x_path, *rank_args(policy),
                          "--output-prefix", prefix, "--output-dtype", output_dtype, *extra)
        x = np.load(x_path).astype(np.float64)
        eff = policy or R.Policy("energy", "0.99")
        u, s, vt, r_ref, e_ref = R.decompose(x, eff)
        r = self.check_rank(fields, eff, R.svd(x)[1], r_ref, e_ref)
        if r != r_ref:
            u, s, vt, _, _ = R.decompose(x, eff, rank=r)
        tol = TOL_F32 if output_dtype == "f32" else TOL_F16_OUTPUT
        dtype = np.float32 if output_dtype == "f32" else np.float16
        self.assertEqual(fields["u"], f"[{x.shape[0]},{r}]")
        self.assertEqual(fields["s"], f"[{r}]")
        self.assertEqual(fields["vt"], f"[{r},{x.shape[1]}]")
        self.check_output(prefix + ".u.npy", u, dtype, tol)
        self.check_output(prefix + ".s.npy", s, np.float32, TOL_F32)
        self.check_output(prefix + ".vt.npy", vt, dtype, tol)
        return r

    def test_matches_reference_with_the_sign_rule_across_shapes(self):
        for L, d in [(1, 1), (1, 7), (7, 1), (5, 12), (40, 9), (33, 33)]:
            m = min(L, d)
            for policy in (R.Policy("fixed", 1), R.Policy("fixed", m),
                           R.Policy("fixed", max(1, m - 2)), R.Policy("fraction", "0.25"),
                           R.Policy("energy", "0.9"), None):
                with self.subTest(L=L, d=d, policy=repr(policy)):
                    self.run_decompose(self.save_input(self.spectrum_input(L, d)), policy)

    def test_max_rank_clips_every_policy(self):
        x = self.save_input(self.spectrum_input(25, 14))
        for policy in (R.Policy("fixed", 10, 4), R.Policy("fraction", "1", 4),
                       R.Policy("energy", "1", 4)):
            with self.subTest(policy=repr(policy)):
                self.assertEqual(self.run_decompose(x, policy), 4)

    def test_sign_rule_uses_the_largest_entry_when_tokens_sum_to_zero(self):
        z = self.rng.normal(size=(5, 12))
        x = self.save_input(np.concatenate([z, -2 * z, z]))
        self.run_decompose(x, R.Policy("fixed", 5))
        u = np.load(self.path("p.u.npy"))
        for i in range(5):
            self.assertGreater(u[np.argmax(np.abs(u[:, i])), i], 0)

    def test_float16_input_and_output(self):
        x = self.save_input(self.spectrum_input(19, 11), dtype=np.float16)
        self.run_decompose(x, R.Policy("fixed", 6))
        self.run_decompose(x, R.Policy("fixed", 6), output_dtype="f16")

    def test_randomized_method_meets_the_accuracy_rule(self):
        # DESIGN.md: reconstruction error within 1% of the optimum; with a spectral gap, singular
        # values within 1e-3 relative.
        L, d, r = 120, 48, 6
        a, _ = np.linalg.qr(self.rng.normal(size=(L, d)))
        b, _ = np.linalg.qr(self.rng.normal(size=(d, d)))
        s = np.concatenate([[40, 35, 30, 25, 20, 15], np.linspace(2, 0.5, d - r)])
        x = (a * s) @ b.T
        x_path = self.save_input(x)
        prefix = self.path("p")
        fields = self.atp("run", "decompose", "--input", x_path, "--rank", r, "--method",
                          "randomized", "--seed", 7, "--output-prefix", prefix)
        self.assertEqual(fields["rank"], str(r))
        x = np.load(x_path).astype(np.float64)
        u = np.load(prefix + ".u.npy").astype(np.float64)
        got_s = np.load(prefix + ".s.npy").astype(np.float64)
        _, s_ref, _ = R.svd(x)
        optimum = np.sqrt((s_ref[r:] ** 2).sum())
        residual = np.linalg.norm(x - u @ (u.T @ x))
        self.assertLessEqual(residual, 1.01 * optimum)
        self.assertLessEqual(np.max(np.abs(got_s - s_ref[:r]) / s_ref[:r]), 1e-3)


class GeneratedDataTest(OpTestCase):
    """The demo path: `atp generate` files run through every op and agree with the reference."""

    def test_generated_layer_and_input_through_every_op(self):
        layer = self.path("gen.safetensors")
        x = self.path("gen_x.npy")
        self.atp("generate", "layer", "--d-model", 24, "--heads", 4, "--kv-heads", 2, "--bias",
                 "--key-scale", "inv_sqrt_len", "--seed", 3, "--output", layer)
        self.atp("generate", "input", "--length", 50, "--d-model", 24, "--components", 4,
                 "--seed", 4, "--output", x)
        # The generated input is an offset plus 4 directions plus noise: ranks up to 5 sit above
        # the noise, where the basis is well determined.
        for r in (1, 3, 5):
            with self.subTest(op="atp-attention", rank=r):
                self.run_atp_attention(layer, x, R.Policy("fixed", r))
        y = self.path("exact.npy")
        self.atp("run", "exact-attention", "--layer", layer, "--input", x, "--output", y)
        self.check_output(y, R.exact_attention(R.Layer(layer), np.load(x)), np.float32, TOL_F32)
        fields = self.atp("run", "lowrank-linear", "--layer", layer, "--weight", "v_proj",
                          "--input", x, "--rank", 5, "--output", y)
        want, _, _ = R.lowrank_linear(R.Layer(layer), "v_proj", np.load(x), rank=5)
        self.assertEqual(fields["rank"], "5")
        self.check_output(y, want, np.float32, TOL_F32)


# ================================================================================================
# Files written and read by other programs, and the generators.


class FileInteropTest(CliTestCase):
    def test_generated_layer_reads_in_numpy_with_the_documented_metadata(self):
        for dtype, np_dtype in (("f32", "F32"), ("f16", "F16"), ("bf16", "BF16")):
            with self.subTest(dtype=dtype):
                path = self.path(f"l_{dtype}.safetensors")
                fields = self.atp("generate", "layer", "--d-model", 64, "--heads", 8,
                                  "--kv-heads", 2, "--bias", "--key-scale", "inv_sqrt_len",
                                  "--dtype", dtype, "--default-rank", "fixed 16", "--output", path)
                self.assertEqual(fields["head_dim"], "8")
                weights, dtypes, md = R.read_safetensors(path)
                self.assertEqual(md["num_heads"], "8")
                self.assertEqual(md["num_kv_heads"], "2")
                self.assertEqual(md["head_dim"], "8")
                self.assertEqual(md["key_scale"], "inv_sqrt_len")
                self.assertEqual(md["default_rank"], "fixed 16")
                self.assertEqual(set(dtypes.values()), {np_dtype})
                self.assertEqual(weights["q_proj.weight"].shape, (64, 64))
                self.assertEqual(weights["k_proj.weight"].shape, (16, 64))
                self.assertEqual(weights["o_proj.bias"].shape, (64,))
                std = weights["q_proj.weight"].std()
                self.assertAlmostEqual(std, 1 / 8, delta=0.01)

    def test_generated_linear_layer(self):
        path = self.path("lin.safetensors")
        self.atp("generate", "linear", "--in-features", 10, "--out-features", 4, "--bias",
                 "--output", path)
        weights, _, md = R.read_safetensors(path)
        self.assertEqual(weights["weight"].shape, (4, 10))
        self.assertEqual(weights["bias"].shape, (4,))
        self.assertEqual(md["default_rank"], "energy 0.99")

    def test_generators_are_deterministic_by_seed(self):
        def gen(name, seed):
            path = self.path(name)
            self.atp("generate", "input", "--length", 20, "--d-model", 8, "--seed", seed,
                     "--output", path)
            with open(path, "rb") as f:
                return f.read()
        self.assertEqual(gen("a.npy", 5), gen("b.npy", 5))
        self.assertNotEqual(gen("a.npy", 5), gen("c.npy", 6))

    def test_input_profiles_have_the_asked_structure(self):
        x = self.path("x.npy")
        self.atp("generate", "input", "--length", 40, "--d-model", 16, "--rank-profile", "exact",
                 "--components", 3, "--output", x)
        s = np.linalg.svd(np.load(x).astype(np.float64), compute_uv=False)
        self.assertEqual(int((s > 1e-4 * s[0]).sum()), 3)
        self.atp("generate", "input", "--length", 40, "--d-model", 16, "--rank-profile", "flat",
                 "--output", x)
        s = np.linalg.svd(np.load(x).astype(np.float64), compute_uv=False)
        self.assertGreater(s[-1], 0.1 * s[0])
        self.atp("generate", "input", "--length", 64, "--d-model", 32, "--components", 4,
                 "--dtype", "f16", "--output", x)
        a = np.load(x)
        self.assertEqual(a.dtype, np.float16)
        self.assertEqual(a.shape, (64, 32))
        s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
        energy = np.cumsum(s ** 2) / (s ** 2).sum()
        self.assertGreater(energy[4], 0.99)  # offset + 4 directions carry the input
        self.assertLess(energy[0], 0.9)

    def test_numpy_files_of_every_supported_layout_are_accepted(self):
        layer = self.make_layer(8, 2)
        # Saved by NumPy (f32 and f16), a transposed-then-copied array, and a 1 x d sequence.
        cases = {"f32.npy": self.rng.normal(size=(5, 8)).astype(np.float32),
                 "f16.npy": self.rng.normal(size=(5, 8)).astype(np.float16),
                 "copy.npy": np.ascontiguousarray(self.rng.normal(size=(8, 3)).T.astype("<f4")),
                 "one.npy": self.rng.normal(size=(1, 8)).astype(np.float32)}
        for name, a in cases.items():
            with self.subTest(name=name):
                path = self.path(name)
                np.save(path, a)
                y = self.path("y.npy")
                fields = self.atp("run", "exact-attention", "--layer", layer, "--input", path,
                                  "--output", y)
                self.assertEqual(fields["shape"], f"[{a.shape[0]},8]")
                want = R.exact_attention(R.Layer(layer), a.astype(np.float64))
                self.assertLessEqual(R.rel_error(np.load(y), want), TOL_F32)


# ================================================================================================
# Errors: one line on stderr, exit 2 for the command line, 1 for files and computation.


class CliErrorTest(CliTestCase):
    def setUp(self):
        super().setUp()
        self.layer = self.make_layer(12, 4, 2, bias=True)
        self.x = self.save_input(self.rng.normal(size=(10, 12)))
        self.y = self.path("y.npy")

    def attention(self, *extra, layer=None, x=None):
        return ["run", "atp-attention", "--layer", layer or self.layer, "--input", x or self.x,
                *extra, "--output", self.y]

    def test_missing_files(self):
        self.atp_fail(1, *self.attention(layer=self.path("nope.safetensors")),
                      want_text="nope.safetensors: No such file", outputs=[self.y])
        self.atp_fail(1, *self.attention(x=self.path("nope.npy")),
                      want_text="nope.npy: No such file", outputs=[self.y])
        self.atp_fail(1, "run", "decompose", "--input", self.dir, "--output-prefix",
                      self.path("p"), want_text="not a regular file")

    def test_wrong_input_shapes(self):
        cases = {"wide.npy": (np.zeros((10, 13)), "want [10,12]"),
                 "vector.npy": (np.zeros(12), "want a sequence [L, 12]"),
                 "cube.npy": (np.zeros((2, 3, 12)), "want a sequence [L, 12]"),
                 "empty.npy": (np.zeros((0, 12)), "with L, d >= 1")}
        for name, (a, want) in cases.items():
            with self.subTest(name=name):
                x = self.save_input(a, name)
                self.atp_fail(1, *self.attention("--rank", 2, x=x), want_text=want,
                              outputs=[self.y])
        u = self.save_input(np.ones((10, 3)), "u.npy")
        for name, c, want in (("c_wide.npy", np.ones((3, 13)), "want [3,12] (in_features of "
                                                               "q_proj.weight"),
                              ("c_rows.npy", np.ones((4, 12)), "want [3,12] (the columns of")):
            with self.subTest(name=name):
                self.atp_fail(1, "run", "lowrank-linear", "--layer", self.layer, "--weight",
                              "q_proj", "--input-u", u, "--input-c", self.save_input(c, name),
                              "--output", self.y, want_text=want, outputs=[self.y])
        o_in = self.save_input(np.zeros((4, 7)), "o.npy")
        self.atp_fail(1, "run", "lowrank-linear", "--layer", self.layer, "--weight", "o_proj",
                      "--input", o_in, "--output", self.y, want_text="in_features of o_proj.weight")

    def test_non_finite_inputs(self):
        for bad in (np.nan, np.inf, -np.inf):
            with self.subTest(value=bad):
                a = self.rng.normal(size=(10, 12))
                a[3, 4] = bad
                x = self.save_input(a, "bad.npy")
                self.atp_fail(1, *self.attention(x=x), want_text="non-finite value",
                              outputs=[self.y])
                self.atp_fail(1, "run", "decompose", "--input", x, "--output-prefix",
                              self.path("p"), want_text="bad.npy", outputs=[self.path("p.u.npy")])

    def test_bad_layer_metadata_and_weights(self):
        cases = [({"num_kv_heads": 3}, "num_kv_heads is 3, want a divisor of num_heads 4"),
                 ({"num_heads": "four"}, "num_heads is \"four\""),
                 ({"key_scale": "sqrt"}, "key_scale is \"sqrt\", want none or inv_sqrt_len"),
                 ({"head_dim": 5}, "q_proj.weight has shape [12,12], want [20,12]"),
                 ({"default_rank": "energy 7"}, "default_rank")]
        for extra, want in cases:
            with self.subTest(metadata=extra):
                layer = self.make_layer(12, 4, 2, metadata_extra=extra, name="bad.safetensors")
                self.atp_fail(1, *self.attention(layer=layer), want_text=want, outputs=[self.y])
        tensors, _, md = R.read_safetensors(self.layer)
        del md["num_heads"]
        R.write_safetensors(self.path("nh.safetensors"), tensors, md)
        self.atp_fail(1, *self.attention(layer=self.path("nh.safetensors")),
                      want_text="has no num_heads")
        tensors, _, md = R.read_safetensors(self.layer)
        tensors["k_proj.weight"] = tensors["k_proj.weight"][:, :11]
        R.write_safetensors(self.path("ks.safetensors"), tensors, md)
        self.atp_fail(1, *self.attention(layer=self.path("ks.safetensors")),
                      want_text="k_proj.weight has shape [6,11], want [6,12]")
        tensors, _, md = R.read_safetensors(self.layer)
        tensors["v_proj.bias"][0] = np.nan
        R.write_safetensors(self.path("nan.safetensors"), tensors, md)
        self.atp_fail(1, *self.attention(layer=self.path("nan.safetensors")),
                      want_text="v_proj.bias contains a non-finite value")

    def test_bad_files(self):
        garbage = self.path("garbage.safetensors")
        with open(garbage, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
        self.atp_fail(1, *self.attention(layer=garbage), want_text="JSON error")
        with open(garbage, "wb") as f:
            f.write(b"\xff" * 64)
        self.atp_fail(1, *self.attention(layer=garbage), want_text="header length")
        x64 = self.path("x64.npy")
        np.save(x64, self.rng.normal(size=(10, 12)))
        self.atp_fail(1, *self.attention(x=x64), want_text="(float64)")
        xf = self.path("xf.npy")
        np.save(xf, np.asfortranarray(self.rng.normal(size=(10, 12)).astype(np.float32)))
        self.atp_fail(1, *self.attention(x=xf), want_text="Fortran")
        xi = self.path("xi.npy")
        np.save(xi, np.zeros((10, 12), dtype=np.int32))
        self.atp_fail(1, *self.attention(x=xi), want_text="(int32)")
        with open(self.x, "rb") as f:
            data = f.read()
        short = self.path("short.npy")
        with open(short, "wb") as f:
            f.write(data[:-7])
        self.atp_fail(1, *self.attention(x=short), want_text="is truncated")
        linear = self.make_linear(12, 3)
        self.atp_fail(1, *self.attention(layer=linear), want_text="is a linear layer")

    def test_bad_rank_options_are_usage_errors(self):
        cases = [(("--rank", 2, "--rank-energy", 0.5), "--rank and --rank-energy conflict"),
                 (("--rank-fraction", 0.5, "--rank-energy", 0.5), "conflict"),
                 (("--rank", 0), "--rank is \"0\", want an integer"),
                 (("--rank", "abc"), "--rank is \"abc\""),
                 (("--rank", 2.5), "--rank is \"2.5\""),
                 (("--rank-fraction", 1.5), "want a number in (0, 1]"),
                 (("--rank-fraction", 0), "want a number in (0, 1]"),
                 (("--rank-energy", "nan"), "--rank-energy is \"nan\""),
                 (("--max-rank", -1), "--max-rank is \"-1\""),
                 (("--rank", 2, "--rank", 3), "--rank is given more than once")]
        for extra, want in cases:
            with self.subTest(args=extra):
                self.atp_fail(2, *self.attention(*extra), want_text=want, outputs=[self.y])

    def test_bad_command_lines_are_usage_errors(self):
        cases = [((), "want a command"),
                 (("frobnicate",), "unknown command \"frobnicate\""),
                 (("run",), "want one of atp-attention"),
                 (("run", "attention"), "unknown op \"attention\""),
                 (("generate", "weights"), "unknown kind \"weights\""),
                 (("run", "atp-attention", "--input", self.x), "--layer FILE is required"),
                 (("run", "decompose", "--input", self.x), "--output-prefix P is required"),
                 (tuple(self.attention("--bogus")), "unknown option --bogus"),
                 (tuple(self.attention("extra")), "unexpected argument \"extra\""),
                 (tuple(self.attention("--backend", "tpu")), "--backend is \"tpu\""),
                 (tuple(self.attention("--output-dtype", "bf16")), "--output-dtype is \"bf16\""),
                 (("run", "exact-attention", "--layer", self.layer, "--input", self.x,
                   "--causal=yes", "--output", self.y), "--causal takes no value"),
                 (("run", "lowrank-linear", "--layer", self.layer, "--input", self.x,
                   "--output", self.y), "give --weight q_proj"),
                 (("run", "lowrank-linear", "--layer", self.layer, "--weight", "q_proj",
                   "--input", self.x, "--input-u", self.x, "--input-c", self.x, "--output",
                   self.y), "give --input or --input-u with --input-c, not both"),
                 (("run", "lowrank-linear", "--layer", self.layer, "--weight", "q_proj",
                   "--input-u", self.x, "--output", self.y),
                  "needs both --input-u and --input-c, got only --input-u"),
                 (("run", "lowrank-linear", "--layer", self.layer, "--weight", "q_proj",
                   "--output", self.y), "missing --input (or --input-u with --input-c)"),
                 (("run", "lowrank-linear", "--layer", self.layer, "--weight", "q_proj",
                   "--input", self.x, "--output", self.y, "--output-prefix", self.path("p")),
                  "give --output or --output-prefix, not both"),
                 (("run", "lowrank-linear", "--layer", self.layer, "--weight", "q_proj",
                   "--input", self.x), "missing --output (or --output-prefix)"),
                 (("generate", "layer", "--d-model", 10, "--heads", 4, "--output",
                   self.path("l.safetensors")), "not a multiple of --heads 4"),
                 (("generate", "layer", "--d-model", 8, "--heads", 4, "--kv-heads", 3,
                   "--output", self.path("l.safetensors")), "--kv-heads 3 does not divide"),
                 (("generate", "input", "--length", 5, "--d-model", 4, "--components", 6,
                   "--output", self.path("g.npy")), "--components 6 exceeds"),
                 (("generate", "input", "--length", 0, "--d-model", 4, "--output",
                   self.path("g.npy")), "--length is \"0\"")]
        for args, want in cases:
            with self.subTest(args=args):
                err = self.atp_fail(2, *args, want_text=want, outputs=[self.y])
                self.assertIn("--help", err)

    def test_unknown_weight_and_unwritable_output(self):
        self.atp_fail(1, "run", "lowrank-linear", "--layer", self.layer, "--weight", "lm_head",
                      "--input", self.x, "--output", self.y, want_text="has no lm_head.weight")
        linear = self.make_linear(12, 3)
        self.atp_fail(1, "run", "lowrank-linear", "--layer", linear, "--weight", "q_proj",
                      "--input", self.x, "--output", self.y, want_text="omit --weight")
        self.atp_fail(1, "generate", "input", "--length", 4, "--d-model", 4, "--output",
                      self.path("no/such/dir/x.npy"), want_text="no/such/dir/x.npy")

    def test_cuda_backend_without_a_device_fails_cleanly(self):
        code, out, err = self.run_atp(*self.attention("--backend", "cuda", "--rank", 2))
        if code != 0:  # a machine with a usable GPU may run it
            self.assertEqual(code, 1, err)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertFalse(os.path.exists(self.y))


class HelpTest(CliTestCase):
    def test_every_command_documents_its_options(self):
        commands = {("run", "atp-attention"): ["--layer", "--input", "--output", "--rank",
                                               "--rank-fraction", "--rank-energy", "--max-rank",
                                               "--backend", "--output-dtype", "--seed"],
                    ("run", "exact-attention"): ["--causal", "--layer", "--backend"],
                    ("run", "lowrank-linear"): ["--weight", "--rank-energy", "--backend",
                                                "--input-u", "--input-c", "--output-prefix"],
                    ("run", "decompose"): ["--output-prefix", "--method", "--rank"],
                    ("generate", "layer"): ["--d-model", "--heads", "--kv-heads", "--head-dim",
                                            "--bias", "--key-scale", "--dtype", "--seed"],
                    ("generate", "linear"): ["--in-features", "--out-features", "--bias"],
                    ("generate", "input"): ["--length", "--d-model", "--rank-profile",
                                            "--components", "--noise", "--seed"]}
        for cmd, options in commands.items():
            with self.subTest(cmd=cmd):
                code, out, err = self.run_atp(*cmd, "--help")
                self.assertEqual((code, err), (0, ""))
                self.assertIn(f"atp {' '.join(cmd)}", out)
                for option in options:
                    self.assertIn(option, out)
        for args in (("--help",), ("help",), ("run", "--help"), ("generate", "--help"),
                     ("help", "run")):
            with self.subTest(args=args):
                code, out, err = self.run_atp(*args)
                self.assertEqual((code, err), (0, ""))
                self.assertIn("atp-attention" if "generate" not in args else "input", out)
        code, out, _ = self.run_atp("--version")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"^atp \d+\.\d+\.\d+\n$")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: cli_test.py PATH/TO/atp [unittest arguments]")
    ATP = os.path.abspath(sys.argv.pop(1))
    unittest.main()
