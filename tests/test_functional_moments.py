"""eta="moments": Eq. 6's eta with the image block's softmax normaliser estimated from its keys' moments."""

import math

import pytest
import torch

from lindit.functional import hybrid_attention, linear_attention, moment_log_normaliser, softmax_attention


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _reference_log_normaliser(q, k, scale, count):
    """log N + scale q.mu + scale^2 q^T Sigma q / 2 with mu and Sigma (population) computed directly, float64."""
    q, k = q.double(), k.double()
    mu = k.mean(-2, keepdim=True)  # (B, H, 1, d)
    centred = k - mu
    cov = centred.transpose(-2, -1) @ centred / k.shape[-2]  # (B, H, d, d)
    return math.log(count) + scale * q @ mu.transpose(-2, -1) + 0.5 * scale**2 * ((q @ cov) * q).sum(-1, keepdim=True)


@pytest.mark.parametrize("n, m", [(29, 11), (1, 5), (13, 1)])
def test_moment_log_normaliser_matches_its_closed_form(n, m):
    q, k = _randn(2, 3, n, 8, seed=0), _randn(2, 3, m, 8, seed=1) + 0.3
    got = moment_log_normaliser(q, k, scale=0.4, count=4 * m)
    torch.testing.assert_close(got.double(), _reference_log_normaliser(q, k, 0.4, 4 * m), rtol=1e-5, atol=1e-5)
    assert got.shape == (2, 3, n, 1) and got.dtype == torch.float32


def test_moment_log_normaliser_is_the_log_partition_for_gaussian_scores():
    """With many Gaussian keys and moderate scores, the estimate is the true log-sum-exp (the claim it rests on)."""
    q, k = _randn(1, 2, 16, 8, seed=2) * 0.5, _randn(1, 2, 20000, 8, seed=3) * 0.7 + 0.2
    true = torch.logsumexp(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1, keepdim=True)
    torch.testing.assert_close(moment_log_normaliser(q, k), true, rtol=0, atol=0.02)
    assert (moment_log_normaliser(q, k) - true).abs().max() < 0.1 * (true - math.log(20000)).abs().max() + 0.02


def test_moment_log_normaliser_adds_up_over_key_shards():
    """reduce_state combines shard states as it does for linear attention (sequence parallelism)."""
    q, k = _randn(2, 3, 9, 8, seed=4), _randn(2, 3, 12, 8, seed=5)
    from lindit.functional import linear_attention_state

    other = linear_attention_state(k[..., 7:, :], k[..., 7:, :])
    reduce = lambda state, count: (state + other[0], count + other[1])  # noqa: E731
    torch.testing.assert_close(moment_log_normaliser(q, k[..., :7, :], reduce_state=reduce), moment_log_normaliser(q, k))


def test_hybrid_moments_eta_mixes_by_the_estimated_softmax_share():
    q_i, k_i, v_i = _randn(2, 3, 29, 8, seed=10), _randn(2, 3, 11, 8, seed=11), _randn(2, 3, 11, 8, seed=12)
    k_p, v_p = _randn(2, 3, 7, 8, seed=14), _randn(2, 3, 7, 8, seed=15)
    fq, fk = torch.relu(q_i), torch.relu(k_i)
    out, _ = hybrid_attention(fq, fk, v_i, None, k_p, v_p, eta="moments", q_img_softmax=q_i, k_img_softmax=k_i,
                              n_img=44)
    scale = 8 ** -0.5
    lse_p = torch.logsumexp(q_i.double() @ k_p.double().transpose(-2, -1) * scale, dim=-1, keepdim=True)
    w = torch.sigmoid(_reference_log_normaliser(q_i, k_i, scale, 44) - lse_p)  # (B, H, N_I, 1), per query
    expected = w * linear_attention(fq, fk, v_i).double() + (1 - w) * softmax_attention(q_i, k_p, v_p).double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    assert w.std() > 0.05  # the weight really varies per query, unlike the token-count eta
    paper, _ = hybrid_attention(fq, fk, v_i, None, k_p, v_p, eta="moments", q_img_softmax=q_i)  # keys: phi(K_I)
    assert not torch.allclose(out, paper, atol=1e-3)
    with pytest.raises(ValueError, match=r"k_img_softmax must have k_img's shape \(2, 3, 11, 8\), got \(2, 3, 10, 8\)"):
        hybrid_attention(fq, fk, v_i, None, k_p, v_p, eta="moments", k_img_softmax=k_i[:, :, :10])
    with pytest.raises(ValueError, match="'approx', 'exact', 'moments' or a float"):
        hybrid_attention(fq, fk, v_i, None, k_p, v_p, eta="moment")


def test_hybrid_moments_gradients_reach_queries_and_keys_of_the_estimate():
    q_i, k_i = _randn(1, 2, 9, 4, seed=20).requires_grad_(), _randn(1, 2, 9, 4, seed=21).requires_grad_()
    v_i, k_p, v_p = _randn(1, 2, 9, 4, seed=22), _randn(1, 2, 3, 4, seed=23), _randn(1, 2, 3, 4, seed=24)
    out, _ = hybrid_attention(torch.relu(q_i), torch.relu(k_i), v_i, None, k_p, v_p, eta="moments",
                              q_img_softmax=q_i, k_img_softmax=k_i)
    out.square().sum().backward()
    assert q_i.grad.abs().sum() > 0 and k_i.grad.abs().sum() > 0
