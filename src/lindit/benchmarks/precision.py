"""``lindit bench precision``: linear attention in half precision against float64, and its query gradients.

Two measurements behind ``lindit.functional``'s documented tolerances and its normaliser default:

* accuracy: the fast ``linear_attention`` in bfloat16, float16 and float32 against the float64 reference at
  262,144 tokens (8192 px), forward and backward, on ordinary inputs (a quarter of the queries dead), all-zero
  inputs and very large ones; with the forward's temporaries, as a multiple of q's size;
* gradients: max |d out / d q| of a dead or near-dead query (one ReLU feature at delta, the others zero)
  under each normaliser convention (``lindit.functional.NORMALISERS``) against the token count.

    lindit bench precision --out docs/bench/precision
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..dtypes import DTYPES
from ..functional import NORMALISERS, linear_attention, linear_attention_reference, normaliser

KINDS = ("normal", "zero", "large")
# Documented in lindit.functional: |out - out64| <= out_tol * max|v|, |grad - grad64| <= grad_tol * max|grad64|.
# fp32 gradients sum 262,144 terms in float32: about sqrt(N) * 2^-24 = 3e-5 of rounding before any other error.
TOLERANCE = {"bfloat16": (1e-2, 3e-2), "float16": (2e-3, 2e-2), "float32": (1e-5, 5e-5)}


class LiveBytes(TorchDispatchMode):
    """Peak bytes held by tensors that ops create while this mode is on (a storage counts once, until the
    last tensor on it dies): the temporaries of a call, its output included."""

    def __init__(self):
        super().__init__()
        self.refs, self.sizes, self.now, self.peak = {}, {}, 0, 0
        self.external = set()  # storages that existed before (inputs, weights): views of them are free

    def _release(self, key):
        self.refs[key] -= 1
        if not self.refs[key]:
            self.now -= self.sizes.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                key = t.untyped_storage().data_ptr()
                if key not in self.refs:
                    self.external.add(key)
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                key = t.untyped_storage().data_ptr()
                if key in self.external:
                    continue
                if key not in self.refs:
                    self.refs[key], self.sizes[key] = 0, t.untyped_storage().nbytes()
                    self.now += self.sizes[key]
                    self.peak = max(self.peak, self.now)
                self.refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out


def temporaries(fn) -> int:
    """Peak bytes of the tensors ``fn()`` allocates (under no_grad), its result included."""
    with torch.no_grad(), LiveBytes() as live:
        result = fn()
        del result
    return live.peak


def structured_inputs(tokens: int, heads: int, dim: int, dtype: torch.dtype, kind: str, seed: int = 7):
    """q, k non-negative with a quarter of the queries dead; v correlated with k, so outputs differ per query.
    ``zero``: q = k = 0. ``large``: bf16/fp32 scaled by 1e15 (fp32 products near overflow); fp16 shifted
    away from zero (no dead queries: their exact gradient exceeds fp16's range) and scaled so that the naive
    fp16 key sum overflows."""
    g = torch.Generator().manual_seed(seed)
    q = torch.relu(torch.randn(1, heads, tokens, dim, generator=g))
    k = torch.relu(torch.randn(1, heads, tokens, dim, generator=g))
    v = k @ torch.randn(dim, dim, generator=g) / dim**0.5 + 0.3 * torch.randn(1, heads, tokens, dim, generator=g)
    q[:, :, ::4] = 0.0
    if kind == "zero":
        q, k = torch.zeros_like(q), torch.zeros_like(k)
    elif kind == "large" and dtype == torch.float16:
        q, k, v = (q + 0.5) * 2**10, (k + 1) * 2**10, v * 2**6
    elif kind == "large":
        q, k, v = q * 1e15, k * 1e15, v * 1e15
    return [t.to(dtype) for t in (q, k, v)]


def accuracy_row(tokens: int, heads: int, dim: int, dtype_name: str, kind: str, device: str = "cpu") -> dict:
    """One dtype and input kind: finiteness, errors against float64 (forward and each gradient), temporaries.
    The inputs are drawn on the CPU and moved to ``device``, so every device sees the same numbers."""
    dtype = DTYPES[dtype_name]
    q, k, v = (t.to(device).requires_grad_() for t in structured_inputs(tokens, heads, dim, dtype, kind))
    out = linear_attention(q, k, v)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(8)).to(device=device, dtype=dtype)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = linear_attention_reference(q64, k64, v64)
    ref.backward(grad.double())
    row = {"dtype": dtype_name, "kind": kind, "tokens": tokens, "heads": heads, "dim": dim,
           "finite": bool(all(torch.isfinite(t).all() for t in (out, q.grad, k.grad, v.grad))),
           "out_err": _rel(out, ref, v64.detach().abs().max())}
    for name, mine, theirs in (("q", q, q64), ("k", k, k64), ("v", v, v64)):
        row[f"grad_{name}_err"] = _rel(mine.grad, theirs.grad, theirs.grad.abs().max())
    # fp16 stops at 65,504: a dead query's exact gradient (|g|_1 max|v| mean(k) / eps) can lie beyond it
    row["max_grad_q64"] = float(q64.grad.abs().max())
    row["representable"] = bool(max(t.grad.abs().max() for t in (q64, k64, v64)) <= torch.finfo(dtype).max)
    qd, kd, vd = (t.detach() for t in (q, k, v))
    row["temporaries_x_q"] = temporaries(lambda: linear_attention(qd, kd, vd)) / (qd.numel() * qd.element_size())
    out_tol, grad_tol = TOLERANCE[dtype_name]
    grads_ok = all(row[f"grad_{n}_err"] <= grad_tol for n in "qkv") if row["representable"] else True
    row["within_tolerance"] = (row["finite"] or not row["representable"]) and row["out_err"] <= out_tol and grads_ok
    return row


def _rel(mine, ref, scale) -> float:
    err = (mine.detach().double() - ref.detach()).abs().max()
    return float(err / scale) if scale > 0 else float(err)  # scale: a float64 reference, no graph


def query_gradient(name: str, tokens: int, dtype: torch.dtype, delta: float, seed: int = 9) -> tuple[float, float]:
    """(max |d L / d q| for L = g . out (g random) of a query with one feature at ``delta`` and the rest zero,
    the convention's bound 2 |g|_1 max|v| max_c mean_j k_jc / eps_on_mean), over ``tokens`` keys whose
    values are correlated with them (so mean_j k_j v_j does not vanish as N grows), 8 features."""
    g = torch.Generator().manual_seed(seed)
    k = torch.relu(torch.randn(1, 1, tokens, 8, generator=g))
    v = k @ torch.randn(8, 8, generator=g) / 8**0.5 + 0.3 * torch.randn(1, 1, tokens, 8, generator=g)
    direction = torch.randn(1, 1, 1, 8, generator=g)
    q = torch.zeros(1, 1, 1, 8)
    q[..., 0] = delta
    q, k, v = (t.to(dtype) for t in (q, k, v))
    q.requires_grad_()
    (linear_attention(q, k, v, eps=name).float() * direction).sum().backward()
    eps = normaliser(name).eps_on_mean(tokens)
    bound = 2 * direction.abs().sum() * v.float().abs().max() * k.float().mean(dim=-2).max() / eps
    return float(q.grad.float().abs().max()), float(bound)


def gradient_rows(token_counts, deltas, dtypes) -> list[dict]:
    rows = []
    for dtype_name in dtypes:
        for name in NORMALISERS:
            for n in token_counts:
                for delta in deltas:
                    grad, bound = query_gradient(name, n, DTYPES[dtype_name], delta)
                    rows.append({"dtype": dtype_name, "normaliser": name, "tokens": n, "delta": delta,
                                 "max_grad": grad, "bound": bound})
    return rows


def add_parser(kinds) -> None:
    p = kinds.add_parser("precision", help="linear attention in half precision against float64; query gradients",
                         description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=262_144, help="tokens of the accuracy check (default 262144)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dim", type=int, default=64, help="head dimension (default 64, SD3.5's)")
    p.add_argument("--dtypes", nargs="+", choices=list(TOLERANCE), default=list(TOLERANCE))
    p.add_argument("--gradient-tokens", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--out", type=Path, default=Path("bench-output"), help="directory for precision.md and .json")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import write_json, write_text

    if args.tokens < 1 or args.heads < 1 or args.dim < 1 or min(args.gradient_tokens) < 1:
        raise ValueError("--tokens, --heads, --dim and --gradient-tokens must be positive")
    accuracy = [accuracy_row(args.tokens, args.heads, args.dim, d, kind) for d in args.dtypes for kind in KINDS]
    grads = gradient_rows(args.gradient_tokens, (0.0, 1e-9, 1e-6, 1e-3), [d for d in args.dtypes if d != "float16"])
    command = "lindit " + " ".join(getattr(args, "argv", ["bench", "precision"]))
    md = precision_markdown(accuracy, grads, command)
    print(md)
    write_text(args.out / "precision.md", md + "\n")
    write_json(args.out / "precision.json", {"command": command, "tolerance": TOLERANCE,
                                             "accuracy": accuracy, "gradients": grads})
    print(f"\nwrote {args.out / 'precision.md'} and {args.out / 'precision.json'}")
    return 0 if all(r["within_tolerance"] for r in accuracy) else 1


def precision_markdown(accuracy, grads, command) -> str:
    from ..eval.report import markdown_table

    acc_rows = [[r["dtype"], r["kind"], "yes" if r["finite"] else ("no" if not r["representable"] else "**no**"),
                 f"{r['out_err']:.1e}", f"{r['grad_q_err']:.1e}", f"{r['grad_k_err']:.1e}", f"{r['grad_v_err']:.1e}",
                 f"{r['max_grad_q64']:.1e}", f"{r['temporaries_x_q']:.2f}x",
                 ("yes" if r["within_tolerance"] else "**no**") + ("" if r["representable"] else
                                                                   " (exact gradient beyond the dtype's range)")]
                for r in accuracy]
    first = accuracy[0]
    tol = ", ".join(f"{d} {o:g} / {g:g}" for d, (o, g) in TOLERANCE.items())
    grad_cols = sorted({r["tokens"] for r in grads})
    by = {(r["dtype"], r["normaliser"], r["delta"], r["tokens"]): r for r in grads}
    keys = list(dict.fromkeys((r["dtype"], r["normaliser"], r["delta"]) for r in grads))
    grad_rows = [[d, n, f"{delta:g}"] + [f"{by[(d, n, delta, t)]['max_grad']:.2e}" for t in grad_cols]
                 + [f"{by[(d, n, delta, grad_cols[-1])]['bound']:.2e}"] for d, n, delta in keys]
    return "\n\n".join([
        f"Made by `{command}`.",
        f"linear_attention against the float64 reference, {first['tokens']:,} tokens, {first['heads']} heads x "
        f"{first['dim']} features: max |error| of the output over max |v|, of each gradient over the reference's "
        f"max |gradient|; temporaries = peak bytes the forward allocates (its output included) over q's bytes. "
        f"Tolerances (output / gradients): {tol}.",
        markdown_table(["dtype", "inputs", "finite", "out", "grad q", "grad k", "grad v", "max |grad q| (float64)",
                        "temporaries", "within tolerance"], acc_rows),
        "max |d L / d q| (L = g . out, g random) of a dead (delta = 0) or near-dead query (one ReLU feature at "
        "delta), per normaliser convention and key count N, values correlated with keys; 'bound' = "
        "2 |g|_1 max|v| max_c mean_j k_jc / eps on the mean, at the largest N (for LiT's, a loose one: its "
        "feature epsilon also keeps the denominator away from zero).",
        markdown_table(["dtype", "normaliser", "delta"] + [f"N={t}" for t in grad_cols] + ["bound"], grad_rows),
    ])
