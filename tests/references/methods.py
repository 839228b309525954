"""What each registry method is, according to the paper it comes from, as descriptions for ``layers``.

Written from the papers, not from lindit's registry, so a registry entry wired to the wrong maps fails its
reference test.
"""

from .layers import JointSpec, SelfSpec

SELF = {
    "softmax": SelfSpec(attention="softmax"),  # the teacher (EDiT Eq. 1)
    # EDiT Sec. 3.1: Q = ReLU(Linear(X + ConvFusion)), K = ReLU(SC(X)), V = SC(X), Eq. (3)
    "edit": SelfSpec(q="convfusion", k="compressor", v="compressor"),
    # EDiT Table 1 ablations: CF on Q and K with plain V; SC on K and V only; CF on Q only
    "edit_cf_qk": SelfSpec(q="convfusion", k="convfusion", v="linear"),
    "edit_sc_only": SelfSpec(q="linear", k="compressor", v="compressor"),
    "edit_cf_q": SelfSpec(q="convfusion", k="linear", v="linear"),
    # LiT Sec. 3.1 / Algorithm 1: ReLU linear attention + 5x5 depthwise conv on V, 2 heads
    "lit": SelfSpec(value_conv=5, heads=2),
    # SANA (EDiT Sec. 2.2): ReLU(Linear(x)) for queries and keys, linear values (Mix-FFN tested apart)
    "sana": SelfSpec(),
    # LinFusion: 1 + ELU(Linear(x + MLP(x))) for queries and keys, linear values
    "linfusion": SelfSpec(q="linfusion", k="linfusion", phi="elu1"),
    # PixArt-Sigma: softmax attention over 2x2-compressed keys and values
    "kv_compress": SelfSpec(attention="softmax", kv_factor=2),
}

# What replaces SD3.5's image-only attn2 (dual-attention blocks) for each joint method. EDiT Table 2 names
# only the joint layer; lindit gives the image-only layer the same image maps: EDiT's linear compressed
# attention for MM-EDiT and the Linear MM-DiTs, SANA's linear attention for the plain and SANA variants.
SELF_OF_JOINT = {
    "mm_edit": "edit", "mm_edit_exact": "edit", "mm_edit_plain": "sana",
    "linear_mmdit_alpha": "edit", "linear_mmdit_beta": "edit", "sana_mmdit": "sana",
}

JOINT = {
    "softmax": JointSpec(mode="softmax", q="linear", k="linear", v="linear"),  # SD3's joint attention
    # EDiT Eq. (7): CF queries, SC keys/values for the image; eta = N_I / (N_I + N_P)
    "mm_edit": JointSpec(),
    "mm_edit_exact": JointSpec(eta="exact"),  # eta^Lin per query
    "mm_edit_plain": JointSpec(q="linear", k="linear", v="linear"),  # without phi_CF and phi_SC
    # Linear MM-DiT-alpha: MM-EDiT's maps, linear attention for every pair; beta: LinFusion prompt maps
    "linear_mmdit_alpha": JointSpec(mode="linear"),
    "linear_mmdit_beta": JointSpec(mode="linear", prompt_qk="linfusion", prompt_phi="elu1"),
    "sana_mmdit": JointSpec(mode="linear", q="linear", k="linear", v="linear"),
}
