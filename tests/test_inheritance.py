"""Weight inheritance (LiT Table 3, Guidelines 3-4): every tensor that ``inherit`` names is the teacher's,
checked on a teacher whose every attention tensor is random (fresh norms are all ones, so an RMSNorm left
uninherited would otherwise look inherited)."""

import pytest
import torch
from tiny_models import BUILDERS

import lindit

# inherit letter -> the diffusers Attention tensors it names (image and prompt projections, SD3.5's qk norms)
GROUPS = {"q": ("to_q", "norm_q", "add_q_proj", "norm_added_q"), "k": ("to_k", "norm_k", "add_k_proj", "norm_added_k"),
          "v": ("to_v", "add_v_proj"), "o": ("to_out.0", "to_add_out")}
CASES = [("pixart", "edit", "attn1"), ("pixart", "kv_compress", "attn1"), ("sd3", "mm_edit", "attn"),
         ("sd3", "mm_edit", "attn2"), ("sd3", "linear_mmdit_beta", "attn"), ("dit", "lit", "attn1")]


@pytest.mark.parametrize("fam, method, attr", CASES)
@pytest.mark.parametrize("groups", ["q", "k", "v", "o"])
def test_inherited_tensors_are_the_teachers(fam, method, attr, groups):
    teacher = BUILDERS[fam]()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    t_layer = getattr(teacher.transformer_blocks[0], attr)
    s_layer = getattr(lindit.convert(teacher, method, inherit=groups, layers=[0]).transformer_blocks[0], attr)
    t_state, s_state = t_layer.state_dict(), s_layer.state_dict()
    inherited = [f"{m}.{n}" for m in GROUPS[groups] for n in ("weight", "bias")
                 if f"{m}.{n}" in t_state and f"{m}.{n}" in s_state]
    assert inherited, "nothing to inherit"
    for name in inherited:
        assert torch.equal(s_state[name], t_state[name]), name
    others = [n for n in s_state if n in t_state and n not in inherited and s_state[n].shape == t_state[n].shape]
    assert not any(torch.equal(s_state[n], t_state[n]) for n in others), "a projection not named was copied"
