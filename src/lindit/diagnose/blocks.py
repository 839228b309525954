"""MM-DiT joint attention split into its four blocks, teacher and hybrid student side by side.

Joint softmax attention over [image; prompt] keys decomposes exactly (EDiT Eq. 6): each query row is
eta * A(q, K_I, V_I) + (1 - eta) * A(q, K_P, V_P) with eta = S_I / (S_I + S_P), the share of its softmax
mass on image keys. MM-EDiT (Eq. 7) keeps this shape with a linear image-image block and an approximate eta.
So a student row's error against its teacher's splits exactly into three terms:

    O_s - O_t = eta_s (A1_s - A1_t)  +  (1 - eta_s) (A2_s - A2_t)  +  (eta_s - eta_t) (A1_t - A2_t)
                first block             second block                  mixing weight

where, for image rows, block 1 is image-image and block 2 image-prompt; for prompt rows, block 1 is
prompt-image and block 2 prompt-prompt. Everything is compared before the output projection, per head, so
the split needs a student whose values and output projection start from the teacher's (``inherit`` with v
and o); the layer's output error after projection is reported beside it.

The teacher's blocks are computed from its diffusers ``Attention`` (to_q, add_q_proj, norm_q, ... as
diffusers' ``JointAttnProcessor2_0`` does); the student's from the arguments of its recorded
``lindit.functional`` calls (``taps.py``), with the blocks evaluated by the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..functional import hybrid_attention, linear_attention, softmax_attention, softmax_attention_with_lse
from ..modules.grid import split_heads
from .taps import Call


@dataclass
class Rows:
    """One set of query rows: its two blocks' outputs (B, H, N, d) and the weight of the first (B, H, N, 1)."""

    first: torch.Tensor
    second: torch.Tensor
    eta: torch.Tensor

    @property
    def out(self) -> torch.Tensor:
        return self.eta * self.first + (1 - self.eta) * self.second


def split_softmax(q, k, v, n_first: int, scale=None) -> Rows:
    """Softmax attention of q on keys [first n_first; rest] as two blocks and their mixing weight (Eq. 6)."""
    a1, lse1 = softmax_attention_with_lse(q, k[..., :n_first, :], v[..., :n_first, :], scale)
    a2, lse2 = softmax_attention_with_lse(q, k[..., n_first:, :], v[..., n_first:, :], scale)
    return Rows(a1.float(), a2.float(), torch.sigmoid(lse1 - lse2))


@torch.no_grad()
def teacher_rows(attn, hidden_states, encoder_hidden_states) -> dict[str, Rows]:
    """{"image": Rows, "prompt": Rows} of a diffusers joint ``Attention`` on its own inputs."""
    heads = attn.heads
    q, k, v = (split_heads(f(hidden_states), heads) for f in (attn.to_q, attn.to_k, attn.to_v))  # (B, H, N_I, d)
    qp, kp, vp = (split_heads(f(encoder_hidden_states), heads)
                  for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))  # (B, H, N_P, d)
    q, k = _norm(attn.norm_q, q), _norm(attn.norm_k, k)
    qp, kp = _norm(attn.norm_added_q, qp), _norm(attn.norm_added_k, kp)
    keys, values = torch.cat([k, kp], dim=-2), torch.cat([v, vp], dim=-2)  # image keys first, as SD3
    n_img = k.shape[-2]
    return {"image": split_softmax(q, keys, values, n_img), "prompt": split_softmax(qp, keys, values, n_img)}


def _norm(norm, x):
    return x if norm is None else norm(x)


@torch.no_grad()
def student_rows(calls: list[Call]) -> dict[str, Rows] | None:
    """The same split for a hybrid student layer from its recorded calls; None if it made no hybrid call."""
    hybrid = next((c for c in calls if c.name == "hybrid_attention"), None)
    if hybrid is None:
        return None
    a = hybrid.args
    first = (linear_attention(a["q_img"], a["k_img"], a["v_img"], a["eps"], a["reduce_state"])
             if a["image_attention"] == "linear" else softmax_attention(a["q_img"], a["k_img"], a["v_img"], a["scale"]))
    q_soft = a["q_img"] if a["q_img_softmax"] is None else a["q_img_softmax"]
    second = softmax_attention(q_soft.to(a["k_txt"].dtype), a["k_txt"], a["v_txt"], scale=a["scale"])
    weighted = hybrid_attention(**{**a, "q_txt": None, "v_txt": torch.zeros_like(a["v_txt"])})[0]  # eta * first
    first = first.float()
    eta = (weighted.float() * first).sum(-1, keepdim=True) / first.pow(2).sum(-1, keepdim=True).clamp_min(1e-30)
    rows = {"image": Rows(first, second.float(), eta)}
    prompt = _prompt_rows(hybrid, calls)
    if prompt is not None:
        rows["prompt"] = prompt
    return rows


def _prompt_rows(hybrid: Call, calls: list[Call]) -> Rows | None:
    """Prompt queries attend by softmax over [image keys; prompt keys]: inside the hybrid call, or in the
    layer's own ``joint_prompt_attention`` call (None for a context-pre-only block, which has none)."""
    a = hybrid.args
    if a["q_txt"] is None:
        a = next((c.args for c in calls if c.name == "joint_prompt_attention"), None)
        if a is None:
            return None
    keys = torch.cat([a["k_img"].to(a["k_txt"].dtype), a["k_txt"]], dim=-2)
    values = torch.cat([a["v_img"].to(a["v_txt"].dtype), a["v_txt"]], dim=-2)
    return split_softmax(a["q_txt"], keys, values, a["k_img"].shape[-2], a["scale"])


def error_terms(student: Rows, teacher: Rows) -> dict[str, torch.Tensor]:
    """The split of the module doc as tensors (B, H, N, d): "first" + "second" + "eta" == "total" exactly."""
    if student.first.shape != teacher.first.shape:
        raise ValueError(f"student and teacher blocks differ in shape {tuple(student.first.shape)} vs "
                         f"{tuple(teacher.first.shape)}: the split needs the teacher's heads and head width")
    return {"first": student.eta * (student.first - teacher.first),
            "second": (1 - student.eta) * (student.second - teacher.second),
            "eta": (student.eta - teacher.eta) * (teacher.first - teacher.second),
            "total": student.out - teacher.out}


def block_errors(student: Rows, teacher: Rows) -> dict:
    """Each term's ||term||^2 / ||O_t||^2, and the mean weight of the first block (student, teacher, teacher
    per head)."""
    scale = teacher.out.pow(2).sum().clamp_min(1e-30)
    out = {name: float(t.pow(2).sum() / scale) for name, t in error_terms(student, teacher).items()}
    out.update(eta_student=float(student.eta.mean()), eta_teacher=float(teacher.eta.mean()))
    out["eta_teacher_by_head"] = [round(float(e), 4) for e in teacher.eta.mean(dim=(0, 2, 3))]
    return out
