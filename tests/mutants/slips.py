"""Planted slips: plausible mistakes in the papers' equations and recipes, one exact snippet each.

A slip is a (file under src/lindit, snippet, replacement) and the test files that should catch it, the
likeliest killer first (pytest stops at the first failure). Add one whenever a review finds an equation
the suite let through; a slip that survives needs a test or a written reason in docs/TESTING.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slip:
    name: str
    file: str  # relative to src/lindit
    old: str
    new: str
    what: str  # the mistake, in the papers' words
    tests: tuple[str, ...]


REF = "tests/test_references.py"
LOCAL = "tests/test_layer_checks.py"
FUNC = "tests/test_functional.py"
MODULES = "tests/test_modules.py"
CONVERT = "tests/test_convert.py"
LOSSES = "tests/training/test_loss_terms.py"

SLIPS = [
    # --- functional: EDiT Eq. (1), (3), (7) ---
    Slip("linear-no-normaliser", "functional.py", "out = num / x.to(q.dtype)  # (B, H, N, dv)", "out = num.to(q.dtype)  # (B, H, N, dv)",
         "Eq. 3 without its denominator (numerator over the key count only)", (FUNC, REF)),
    Slip("softmax-scale-inverted", "functional.py", "** -0.5 if scale is None else scale\n    return _SoftmaxWithLSE", "** 0.5 if scale is None else scale\n    return _SoftmaxWithLSE",
         "softmax logits scaled by sqrt(d) instead of 1/sqrt(d) (hybrid's prompt block, eta^Lin)", (FUNC, REF)),
    Slip("eta-swapped", "functional.py", "return n_img / (n_img + n_txt)", "return n_txt / (n_img + n_txt)",
         "eta = N_P / (N_I + N_P) instead of N_I / (N_I + N_P)", (FUNC, REF)),
    Slip("hybrid-weights-swapped", "functional.py", "torch.lerp(out_ip.to(dtype), out_ii.to(dtype), w)",
         "torch.lerp(out_ii.to(dtype), out_ip.to(dtype), w)", "Eq. 7: eta weighs the image-prompt term, 1 - eta the linear one",
         (FUNC, REF)),
    Slip("eta-exact-inverted", "functional.py", "torch.sigmoid(log_s_ii - lse_ip)  # (B, H, N_I, 1)", "torch.sigmoid(lse_ip - log_s_ii)  # (B, H, N_I, 1)",
         "eta^Lin = S_P / (S_I + S_P)", (FUNC, REF)),
    Slip("eta-exact-mean-not-sum", "functional.py", ") + torch.log(scale * max(count, 1))", ") + torch.log(scale)",
         "eta^Lin's linear normaliser as the mean over keys instead of the sum", (FUNC, REF)),
    # --- modules: the layers ---
    Slip("relu-on-v", "modules/attention.py", "linear_attention(q, k, split_heads(v, self.heads), self.eps",
         "linear_attention(q, k, self.phi(split_heads(v, self.heads)), self.eps",
         "ReLU applied to V in linear attention (phi_V must be linear)", (REF, MODULES)),
    Slip("edit-cf-1x1", "modules/token_maps.py", "nn.Conv2d(dim, mid, kernel_size=3, padding=1)",
         "nn.Conv2d(dim, mid, kernel_size=1, padding=0)", "ConvFusion's 3x3 conv made 1x1 (no locality)",
         (LOCAL, REF, MODULES)),
    Slip("edit-cf-no-residual", "modules/token_maps.py", "x = x + getattr(self, before)(x, grid)",
         "x = getattr(self, before)(x, grid)", "Eq. 4: Linear(Conv(...)) instead of Linear(X + Conv(...))", (REF,)),
    Slip("edit-cf-norm-after-act", "modules/token_maps.py", "self.act(self.norm(local))",
         "self.norm(self.act(local))", "Eq. 4: GN(LeakyReLU(.)) instead of LeakyReLU(GN(.))",
         (REF,)),
    Slip("sc-no-padding", "modules/token_maps.py", "stride=s, padding=k // 2, groups=dim", "stride=s, padding=0, groups=dim",
         "Spatial Compressor without padding (floor grid, border tokens dropped)", (LOCAL, REF)),
    Slip("sc-no-stride", "modules/token_maps.py", "sc_stride: int = 2", "sc_stride: int = 1",
         "Spatial Compressor with stride 1 (no compression: EDiT uses stride 2)", (LOCAL, REF)),
    Slip("k-without-relu", "modules/attention.py", "k = self.phi(self.norm_k(split_heads(k, self.heads)))",
         "k = self.norm_k(split_heads(k, self.heads))", "Eq. 5: K = SC(X) without the ReLU", (REF,)),
    Slip("phi-before-qk-norm", "modules/attention.py", "q = self.phi(self.norm_q(split_heads(q, self.heads)))",
         "q = self.norm_q(self.phi(split_heads(q, self.heads)))",
         "feature map applied before SD3.5's per-head RMSNorm of the queries", (REF,)),
    Slip("lit-dwc-on-output", "modules/attention.py", "out = out + self._dwc(v, grid)",
         "out = out + self._dwc(out, grid)", "LiT's depthwise conv applied to the attention output instead of V",
         (REF,)),
    Slip("lit-shared-dwc-per-channel", "modules/attention.py", "conv_channels = inner_dim // heads if",
         "conv_channels = inner_dim if", "value_conv_shared=True building one kernel per channel (not LiT's "
         "Algorithm 1)", ("tests/test_paper_options.py",)),
    Slip("cf-slope", "modules/token_maps.py", "cf_negative_slope: float = 0.01", "cf_negative_slope: float = 0.2",
         "ConvFusion's LeakyReLU slope 0.2 instead of the default 0.01", (REF,)),
    Slip("cf-one-group", "modules/token_maps.py", "return max(g for g in range(1, min(wanted, channels) + 1)",
         "return min(g for g in range(1, min(wanted, channels) + 1)", "ConvFusion's GroupNorm with one group "
         "(a LayerNorm over the whole image)", (REF,)),
    Slip("kv-compress-zero-pad", "modules/token_maps.py", 'pad_h), mode="replicate")', 'pad_h))',
         "KV compression padding odd grids with zeros instead of repeating the edge", (REF, LOCAL)),
    Slip("sc-init-not-average", "modules/token_maps.py", "nn.init.constant_(self.conv.weight, 1.0 / (k * k))",
         "nn.init.constant_(self.conv.weight, 1.0 / k)", "Spatial Compressor initialised as a local sum scaled by "
         "1/k, not the average", (MODULES,)),
    Slip("merge-heads-no-transpose", "modules/grid.py", "return x.transpose(1, 2).reshape(b, n, h * d)",
         "return x.reshape(b, n, h * d)", "heads merged without moving the head axis (tokens and heads mixed)",
         (REF,)),
    Slip("grid-transposed", "modules/grid.py", "return x.reshape(b, h, w, c).permute(0, 3, 1, 2)",
         "return x.reshape(b, w, h, c).permute(0, 3, 2, 1)", "tokens laid on the grid column-major (h and w "
         "swapped)", (REF, LOCAL)),
    Slip("mixffn-gate-swapped", "modules/mixffn.py", "value * F.silu(gate)", "gate * F.silu(value)",
         "Mix-FFN gates with the first half instead of the second", (REF,)),
    Slip("mixffn-no-silu", "modules/mixffn.py", "h = F.silu(self.inverted_conv(x))", "h = self.inverted_conv(x)",
         "Mix-FFN without the SiLU after its 1x1 expansion", (REF,)),
    Slip("kv-compress-no-norm", "modules/token_maps.py", "return self.norm(y), out_grid",
         "return y, out_grid", "PixArt-Sigma's KV compression without its LayerNorm", (REF, LOCAL)),
    Slip("linfusion-ln-after-act", "modules/token_maps.py", "nn.LayerNorm(mid), nn.LeakyReLU()",
         "nn.LeakyReLU(), nn.LayerNorm(mid)", "LinFusion's MLP with LeakyReLU before LayerNorm (its code has LN first)",
         (REF,)),
    Slip("mm-edit-eta-counts-compressed-keys", "modules/joint.py", "n_img=self.bands.count(q_i.shape[-2], grid)",
         "n_img=self.bands.count(k_i.shape[-2], k_grid)", "MM-EDiT's eta counting compressed keys, not image tokens",
         (REF, MODULES)),
    Slip("mm-edit-prompt-rows-prompt-only", "modules/joint.py",
         "joint_prompt_attention(q_p, sk, v_i, k_p, v_p, combine=self.bands.combine(k_grid))", "softmax_attention(q_p, k_p, v_p)",
         "Eq. 7's prompt rows attending to prompt keys only", (REF,)),
    Slip("softmax-qk-swapped", "modules/joint.py", 'sq, sk = (fq, fk) if self.softmax_qk == "phi" else (q_i, k_i)',
         'sq, sk = (q_i, k_i) if self.softmax_qk == "phi" else (fq, fk)',
         "Eq. 7's softmax pairs on the raw maps by default (the paper's phi(Q_I))", (REF, MODULES)),
    Slip("linear-mmdit-no-prompt-keys", "modules/joint.py", "state, count = state + prompt_state, count + prompt_count",
         "state, count = state, count", "Linear MM-DiT's image queries ignoring the prompt keys", (REF,)),
    # --- the registry ---
    Slip("registry-cf-qk-wiring", "methods.py", '_linear_self("convfusion", "convfusion", "linear")',
         '_linear_self("convfusion", "linear", "linear")', "EDiT Table 1's CF-on-Q-and-K ablation without CF on K",
         (REF,)),
    Slip("registry-lit-kernel-3", "methods.py", "value_conv=5, heads=2", "value_conv=3, heads=2",
         "LiT's depthwise conv 3x3 instead of 5x5", (REF,)),
    Slip("registry-lit-teacher-heads", "methods.py", 'opts.get("heads", heads or spec.heads)',
         'opts.get("heads", spec.heads)', "LiT with the teacher's heads instead of its 2 (Guideline 2)", (REF,)),
    Slip("registry-linfusion-relu", "methods.py", '_linear_self("linfusion", "linfusion", "linear", phi="elu1")',
         '_linear_self("linfusion", "linfusion", "linear")', "LinFusion's features ReLU instead of 1 + ELU", (REF,)),
    # --- conversion and inheritance (LiT Guidelines 3-4, PixArt-Sigma's KV compression) ---
    Slip("inherit-q-from-k", "integrations/diffusers/convert.py", '[("to_q", "to_q", "q")', '[("to_k", "to_q", "q")',
         "inherit='q' copying the teacher's key projection", ("tests/test_inheritance.py", CONVERT)),
    Slip("inherit-keeps-branch", "integrations/diffusers/convert.py", "branch.zero_()", "pass",
         "inherited queries keep a random ConvFusion branch (not the teacher's queries)", (CONVERT,)),
    Slip("inherit-drops-qk-norm", "integrations/diffusers/convert.py", '("norm_q", "norm_q", None), ', "",
         "inherit='q' leaving SD3.5's query RMSNorm fresh", ("tests/test_inheritance.py", CONVERT)),
    Slip("sd35-attn2-kept", "integrations/diffusers/convert.py", 'if fam.kind == "joint" and attn2 is not None:',
         'if False:', "SD3.5's image-only attn2 left as softmax attention", (REF, CONVERT)),
    Slip("mixffn-bias-option-ignored", "integrations/diffusers/convert.py",
         'out_bias=options.get("mlp_out_bias", True)', "out_bias=True", "mlp_out_bias=False not reaching Mix-FFN",
         ("tests/test_paper_options.py",)),
    Slip("kv-compress-first-half", "integrations/diffusers/plan.py", "range(depth // 2, depth)",
         "range(0, depth // 2)", "KV compression in the first half of the blocks (PixArt-Sigma: layers 14-27)",
         (CONVERT,)),
    # --- training terms (EDiT Sec. 4, LiT Eq. 5-7, SD3 rectified flow) ---
    Slip("kd-against-target", "training/losses.py", 'terms["kd"] = mse(s_pred, t_pred)',
         'terms["kd"] = mse(s_pred, batch.target)', "knowledge distillation against the noise target, not the "
         "teacher", (LOSSES,)),
    Slip("sigma-halves-swapped", "training/losses.py", "return output[:, :in_channels], output[:, in_channels:]",
         "return output[:, in_channels:], output[:, :in_channels]", "learned-sigma output split the wrong way "
         "round (L_var on the noise channels)", (LOSSES,)),
    Slip("task-unweighted", "training/losses.py", "mse(s_pred, batch.target, batch.weighting)",
         "mse(s_pred, batch.target)", "SD3's rectified-flow loss weighting dropped", (LOSSES,)),
    Slip("feature-sum-over-layers", "training/losses.py", "return torch.stack(losses).mean()",
         "return torch.stack(losses).sum()", "feature distillation summed over layers instead of averaged", (LOSSES,)),
    Slip("flow-target-sign", "training/losses.py", "noise - latents, weighting", "latents - noise, weighting",
         "rectified-flow target x_0 - noise instead of noise - x_0", (LOSSES,)),
    Slip("flow-interpolation-swapped", "training/losses.py", "(1.0 - sigmas) * latents + sigmas * noise",
         "sigmas * latents + (1.0 - sigmas) * noise", "x_t = sigma x_0 + (1 - sigma) noise", (LOSSES,)),
    Slip("ddpm-target-x0", "training/losses.py", "target = noise if self.prediction_type", "target = latents if "
         "self.prediction_type", "epsilon prediction trained towards x_0", (LOSSES,)),
    Slip("mse-sum", "training/losses.py", "weighting.float() * err).mean()", "weighting.float() * err).sum()",
         "MSE summed instead of averaged (LiT's alpha = 1 / BCHW)", (LOSSES,)),
    Slip("flow-weighting-of-1-sigma", "training/losses.py",
         "compute_loss_weighting_for_sd3(self.noise.weighting_scheme, sigmas)",
         "compute_loss_weighting_for_sd3(self.noise.weighting_scheme, 1 - sigmas)",
         "SD3's loss weighting evaluated at 1 - sigma", (LOSSES,)),
    Slip("feature-capture-records-input", "training/hooks.py", "self.features[name] = as_tuple(output)",
         "self.features[name] = as_tuple(args[0])", "feature distillation on each layer's input, not its output",
         (LOSSES,)),
    Slip("loop-teacher-is-student", "training/loop.py", "comp.in_channels, t_out, s_feats, t_feats)",
         "comp.in_channels, out.detach(), s_feats, t_feats)", "the step's KD compares the student with itself",
         (LOSSES,)),
    Slip("lit-lambdas-swapped", "training/config.py", 'LossWeights(task=1.0, kd=0.5, feature=0.0, variance=0.05, guidance=0.0)',
         'LossWeights(task=1.0, kd=0.05, feature=0.0, variance=0.5, guidance=0.0)', "LiT's lambda1 and lambda2 swapped", (LOSSES,)),
]
