"""lindit.functional against plain float64 references of the papers' equations."""

import math

import pytest
import torch

from lindit.functional import (
    hybrid_attention,
    hybrid_attention_reference,
    joint_prompt_attention,
    linear_attention,
    merge_by_lse,
    softmax_attention,
    softmax_attention_with_lse,
    softmax_attention_with_lse_reference,
)


def _features(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(*shape, generator=g)).to(dtype)


def _values(*shape, dtype=torch.float32, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def quadratic_linear_attention(q, k, v, eps=1e-4):
    """EDiT Eq. (2) with sim(q, k) = q . k, as an explicit N x M matrix, in float64; ``eps`` on the mean of the
    similarities (LinFusion's convention, the default)."""
    q, k, v = q.double(), k.double(), v.double()
    sim = q @ k.transpose(-2, -1)  # (B, H, N, M)
    return (sim @ v) / (sim.sum(-1, keepdim=True) + eps * k.shape[-2])


def test_softmax_attention_with_lse_matches_explicit_softmax():
    q, k, v = _values(2, 2, 11, 8, seed=6), _values(2, 2, 17, 8, seed=7), _values(2, 2, 17, 4)
    out, lse = softmax_attention_with_lse(q, k, v)
    scores = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(8)
    torch.testing.assert_close(out.double(), torch.softmax(scores, -1) @ v.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse.double(), torch.logsumexp(scores, -1, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(softmax_attention(q, k, v), out, rtol=1e-5, atol=1e-6)


def _joint_inputs(n_i=29, n_p=7, d=8, scale_q=1.0, dtype=torch.float32):
    q_i, k_i, v_i = _values(2, 3, n_i, d, seed=10) * scale_q, _values(2, 3, n_i, d, seed=11), _values(2, 3, n_i, d, seed=12)
    q_p, k_p, v_p = _values(2, 3, n_p, d, seed=13) * scale_q, _values(2, 3, n_p, d, seed=14), _values(2, 3, n_p, d, seed=15)
    return [t.to(dtype) for t in (q_i, k_i, v_i, q_p, k_p, v_p)]


@pytest.mark.parametrize("scale_q", [1.0, 30.0])  # 30: logits beyond exp's float32 range
def test_hybrid_softmax_exact_is_joint_attention(scale_q):
    """EDiT Eq. (6): the decomposition with exact eta equals softmax over the concatenated tokens."""
    q_i, k_i, v_i, q_p, k_p, v_p = _joint_inputs(scale_q=scale_q)
    out_i, out_p = hybrid_attention(q_i, k_i, v_i, q_p, k_p, v_p, image_attention="softmax", eta="exact")
    q, k, v = (torch.cat(pair, dim=-2).double() for pair in ((q_i, q_p), (k_i, k_p), (v_i, v_p)))
    joint = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1) @ v
    torch.testing.assert_close(out_i.double(), joint[:, :, :29], rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(out_p.double(), joint[:, :, 29:], rtol=1e-5, atol=2e-5)


def test_hybrid_linear_exact_eta_matches_float64_reference():
    q_i, k_i, v_i, q_p, k_p, v_p = _joint_inputs()
    q_i, k_i = torch.relu(q_i), torch.relu(k_i[:, :, :11])  # compressed image keys: 11 of them
    v_i = v_i[:, :, :11]
    out_i, _ = hybrid_attention(q_i, k_i, v_i, q_p, k_p, v_p, eta="exact", eps="linfusion")
    qd, kd, kpd = q_i.double(), k_i.double(), k_p.double()
    s_lin = (qd @ kd.transpose(-2, -1)).sum(-1, keepdim=True)  # sum_j phi(q).phi(k_j), unscaled
    s_exp = torch.exp(qd @ kpd.transpose(-2, -1) / math.sqrt(8)).sum(-1, keepdim=True)
    eta = s_lin / (s_lin + s_exp)  # EDiT eta^Lin
    a_lin = quadratic_linear_attention(q_i, k_i, v_i)
    a_sm = torch.softmax(qd @ kpd.transpose(-2, -1) / math.sqrt(8), -1) @ v_p.double()
    torch.testing.assert_close(out_i.double(), eta * a_lin + (1 - eta) * a_sm, rtol=1e-5, atol=1e-5)


def test_hybrid_approx_eta_uses_token_counts():
    q_i, k_i, v_i, q_p, k_p, v_p = _joint_inputs()
    q_i, k_i = torch.relu(q_i), torch.relu(k_i)
    a_lin = linear_attention(q_i, k_i[:, :, :8], v_i[:, :, :8]).double()
    a_sm = softmax_attention(q_i, k_p, v_p).double()
    out_default, out_p = hybrid_attention(q_i, k_i[:, :, :8], v_i[:, :, :8], q_p, k_p, v_p)
    eta = 29 / (29 + 7)  # N_I counts image queries (uncompressed tokens) by default
    torch.testing.assert_close(out_default.double(), eta * a_lin + (1 - eta) * a_sm, rtol=1e-5, atol=1e-6)
    out_keys, _ = hybrid_attention(q_i, k_i[:, :, :8], v_i[:, :, :8], q_p, k_p, v_p, n_img=8)
    torch.testing.assert_close(out_keys.double(), 8 / 15 * a_lin + 7 / 15 * a_sm, rtol=1e-5, atol=1e-6)
    prompt_keys = torch.cat([k_i[:, :, :8], k_p], -2)
    prompt_values = torch.cat([v_i[:, :, :8], v_p], -2)
    torch.testing.assert_close(out_p, softmax_attention(q_p, prompt_keys, prompt_values))


def test_hybrid_without_prompt_queries_and_bad_eta():
    q_i, k_i, v_i, _, k_p, v_p = _joint_inputs()
    out_i, out_p = hybrid_attention(torch.relu(q_i), torch.relu(k_i), v_i, None, k_p, v_p, eta=0.25)
    assert out_p is None and out_i.shape == q_i.shape
    for bad in ("exactly", 1.5):
        with pytest.raises(ValueError, match="eta"):
            hybrid_attention(q_i, k_i, v_i, None, k_p, v_p, eta=bad)
    with pytest.raises(ValueError, match="image_attention"):
        hybrid_attention(q_i, k_i, v_i, None, k_p, v_p, image_attention="relu")


@pytest.mark.parametrize("eta", ["approx", "exact"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hybrid_half_precision_is_finite_and_close(eta, dtype):
    ins = _joint_inputs(dtype=dtype)
    ins[0], ins[1] = torch.relu(ins[0]), torch.relu(ins[1])
    out_i, out_p = hybrid_attention(*ins, eta=eta)
    ref_i, ref_p = hybrid_attention(*[t.float() for t in ins], eta=eta)
    assert out_i.dtype == dtype and torch.isfinite(out_i).all() and torch.isfinite(out_p).all()
    torch.testing.assert_close(out_i.float(), ref_i, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(out_p.float(), ref_p, rtol=3e-2, atol=3e-2)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        linear_attention(torch.rand(3, 4, 5), torch.rand(3, 4, 5), torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match="token count"):
        linear_attention(torch.rand(1, 1, 4, 2), torch.rand(1, 1, 5, 2), torch.rand(1, 1, 6, 2))


def test_learned_eta_bias_shifts_the_token_count_eta_per_head_in_logit_space():
    q_i, k_i, v_i, _, k_p, v_p = _joint_inputs()
    q_i, k_i = torch.relu(q_i), torch.relu(k_i)
    heads = q_i.shape[1]
    a_lin = linear_attention(q_i, k_i, v_i).double()
    a_sm = softmax_attention(q_i, k_p, v_p).double()
    plain, _ = hybrid_attention(q_i, k_i, v_i, None, k_p, v_p)
    zero, _ = hybrid_attention(q_i, k_i, v_i, None, k_p, v_p, eta_logit_bias=torch.zeros(heads))
    torch.testing.assert_close(zero, plain)  # zero bias: the paper's eta
    bias = torch.linspace(-2.0, 3.0, heads, requires_grad=True)
    out, _ = hybrid_attention(q_i, k_i, v_i, None, k_p, v_p, eta_logit_bias=bias)
    eta = torch.sigmoid(math.log(29 / 7) + bias.detach().double()).view(1, heads, 1, 1)  # N_I = 29, N_P = 7
    torch.testing.assert_close(out.double(), eta * a_lin + (1 - eta) * a_sm, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert bias.grad is not None and (bias.grad != 0).all()
    with pytest.raises(ValueError, match=r"shape \(3,\) \(one per head\), got \(2,\)"):
        hybrid_attention(q_i, k_i, v_i, None, k_p, v_p, eta_logit_bias=torch.zeros(2))
    with pytest.raises(ValueError, match="corrects eta='approx' only"):
        hybrid_attention(q_i, k_i, v_i, None, k_p, v_p, eta="exact", eta_logit_bias=torch.zeros(heads))


def test_hybrid_softmax_term_can_take_its_own_image_queries():
    """q_img_softmax: the image-prompt softmax uses the given queries, the linear term keeps phi(Q_I)."""
    q_i, k_i, v_i, q_p, k_p, v_p = _joint_inputs()
    fq, fk = torch.relu(q_i), torch.relu(k_i)
    a_lin = linear_attention(fq, fk, v_i).double()
    a_sm = softmax_attention(q_i, k_p, v_p).double()  # raw queries: negative components count
    eta = 29 / (29 + 7)
    out, _ = hybrid_attention(fq, fk, v_i, None, k_p, v_p, q_img_softmax=q_i)
    torch.testing.assert_close(out.double(), eta * a_lin + (1 - eta) * a_sm, rtol=1e-5, atol=1e-6)
    paper, _ = hybrid_attention(fq, fk, v_i, None, k_p, v_p)
    assert not torch.allclose(out, paper, atol=1e-3)
    exact, _ = hybrid_attention(fq, fk, v_i, None, k_p, v_p, eta="exact", q_img_softmax=q_i)
    s_lin = (fq.double() @ fk.double().transpose(-2, -1)).sum(-1, keepdim=True)
    s_exp = torch.exp(q_i.double() @ k_p.double().transpose(-2, -1) / math.sqrt(8)).sum(-1, keepdim=True)
    w = s_lin / (s_lin + s_exp)
    torch.testing.assert_close(exact.double(), w * a_lin + (1 - w) * a_sm, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"q_img_softmax must have q_img's shape \(2, 3, 29, 8\), got \(2, 3, 28, 8\)"):
        hybrid_attention(fq, fk, v_i, None, k_p, v_p, q_img_softmax=q_i[:, :, :28])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_softmax_with_lse_gradients_flow_through_both_outputs(dtype):
    """Against autograd through the materialised reference: out and lse both carry gradients (eta^Lin and the
    prompt-row merge depend on lse); odd shapes, keys and queries of different counts."""
    q, k, v = (_values(2, 3, n, 8, seed=s).to(dtype).requires_grad_() for n, s in ((13, 20), (7, 21), (7, 22)))
    out, lse = softmax_attention_with_lse(q, k, v)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, ref_lse = softmax_attention_with_lse_reference(q64, k64, v64)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=tol, atol=tol)
    g_out, g_lse = _values(*out.shape, seed=23), _values(*lse.shape, seed=24)
    (out.double() * g_out).sum().add_((lse.double() * g_lse).sum()).backward()
    ((ref * g_out).sum() + (ref_lse * g_lse).sum()).backward()
    for mine, theirs in ((q, q64), (k, k64), (v, v64)):
        torch.testing.assert_close(mine.grad.double(), theirs.grad, rtol=4 * tol, atol=4 * tol)


def test_softmax_with_lse_in_chunks_equals_one_pass(monkeypatch):
    """Off the fused CPU kernel (other devices, unequal head sizes) queries go in chunks: same result."""
    import lindit.functional as fn

    q, k, v = _values(1, 2, 37, 8, seed=25), _values(1, 2, 11, 8, seed=26), _values(1, 2, 11, 5, seed=27)
    whole = softmax_attention_with_lse(q, k, v)  # dv != d: the chunked path already
    monkeypatch.setattr(fn, "SCORE_CHUNK", 2 * 11 * 5)  # five queries per chunk
    chunked = softmax_attention_with_lse(q, k, v)
    ref = softmax_attention_with_lse_reference(q, k, v)
    for a, b, r in zip(whole, chunked, ref):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_merging_by_lse_is_softmax_over_the_union_and_tolerates_empty_parts():
    q, k, v = _values(2, 2, 5, 8, seed=28), _values(2, 2, 19, 8, seed=29), _values(2, 2, 19, 8, seed=30)
    parts = [softmax_attention_with_lse(q, k[:, :, a:b], v[:, :, a:b]) for a, b in ((0, 4), (4, 4), (4, 19))]
    assert torch.isneginf(parts[1][1]).all() and (parts[1][0] == 0).all()  # no keys: weight 0, not NaN
    out, lse = merge_by_lse(parts)
    ref_out, ref_lse = softmax_attention_with_lse_reference(q, k, v)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    prompt_rows = joint_prompt_attention(q, k[:, :, :13], v[:, :, :13], k[:, :, 13:], v[:, :, 13:])
    torch.testing.assert_close(prompt_rows, softmax_attention(q, k, v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("image_attention, eta", [("linear", "approx"), ("linear", "exact"), ("softmax", "exact"),
                                                  ("linear", 0.3)])
@pytest.mark.parametrize("n_i, m_i, n_p", [(29, 29, 7), (35, 9, 5), (6, 1, 11)])
def test_hybrid_equals_its_reference_outputs_and_gradients(image_attention, eta, n_i, m_i, n_p):
    """The streaming hybrid attention against the first implementation (materialised (N_I, N_P) scores,
    concatenated prompt keys), on odd shapes with compressed keys."""
    shapes = [(2, 3, n, 8) for n in (n_i, m_i, m_i, n_p, n_p, n_p)]
    ins = [_values(*s, seed=40 + i) for i, s in enumerate(shapes)]
    if image_attention == "linear":
        ins[0], ins[1] = torch.relu(ins[0]), torch.relu(ins[1])
    ins = [t.double().requires_grad_() for t in ins]
    refs = [t.detach().clone().requires_grad_() for t in ins]
    out = hybrid_attention(*ins, image_attention=image_attention, eta=eta)
    ref = hybrid_attention_reference(*refs, image_attention=image_attention, eta=eta)
    g = [_values(*o.shape, seed=50 + i).double() for i, o in enumerate(out)]
    for mine, theirs in zip(out, ref):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)
    sum((o * gi).sum() for o, gi in zip(out, g)).backward()
    sum((o * gi).sum() for o, gi in zip(ref, g)).backward()
    for mine, theirs in zip(ins, refs):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-8, atol=1e-9)


def test_softmax_with_lse_takes_any_strides():
    """Values of a row band come out of a conv channels-first: last-dim stride != 1 (the fused kernel's
    assumption); the result must not depend on memory layout."""
    q, k = _values(2, 2, 5, 8, seed=60), _values(2, 2, 9, 8, seed=61)
    v = _values(2, 2, 8, 9, seed=62).transpose(-2, -1)  # (2, 2, 9, 8), stride(-1) = 9
    assert v.stride(-1) != 1
    out, lse = softmax_attention_with_lse(q, k, v)
    ref, ref_lse = softmax_attention_with_lse_reference(q, k, v.contiguous())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
