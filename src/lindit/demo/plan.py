"""What ``lindit demo`` runs: per family, the built-in teacher, the trainer's recipe and the students.

Every student of a family is distilled with the same recipe, budget and data, so the table compares
attention mechanisms and nothing else (as EDiT Tables 1 and 2 do).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

from ..integrations.diffusers.families import FAMILIES as MODEL_FAMILIES, FAMILY_ALIASES
from ..methods import method_variant
from ..world.teachers import settings_of


@dataclass(frozen=True)
class FamilyPlan:
    teacher: str  # built-in teacher name (builtin:NAME)
    recipe: str  # lindit.training recipe
    methods: tuple[str, ...]  # lindit.convert methods, in the order of the report
    quick_methods: tuple[str, ...]
    steps: int  # optimisation steps per student in the default run (every student of the family alike)
    convert: dict = field(default_factory=dict)  # per-method lindit.convert options
    convert_all: dict = field(default_factory=dict)  # lindit.convert options of every student of the family
    # Loss weights of the family's stages over its recipe's (training.config.RECIPES) and the demo's default of
    # no task loss; --task-weight / --feature-weight override them.
    loss: dict = field(default_factory=dict)
    # Must reproduce (paper ordering): (better, worse) pairs, checked on FID and adherence.
    orderings: tuple[tuple[str, str], ...] = ()
    # Must reproduce (paper: "as good as"): (student, reference) pairs, checked with the acceptance's bar
    # (FID within 10%, adherence within 3 points). Like orderings, only when both ran (``--methods``).
    matches: tuple[tuple[str, str], ...] = ()
    # lindit.convert options of the paper's own recipe (a student NAME@paper), in place of the demo's
    # (``convert``, ``convert_all``, the inherited projections); that row also takes the recipe's full loss
    # (training.config.RECIPES, task term on) and the teacher's caption dropout.
    paper_convert: dict = field(default_factory=dict)


FAMILIES: dict[str, FamilyPlan] = {
    # EDiT Table 1 ablations: EDiT beats Spatial Compressor alone ("- SC SC"), and "compressing does not harm
    # performance" (EDiT against ConvFusion queries with uncompressed keys and values, "CF - -"). 960 steps:
    # the budget the EDiT student needed (docs/DIAGNOSIS.md's experiment log has the step sweep).
    "pixart": FamilyPlan("pixart", "edit", ("edit", "lit", "sana", "linfusion", "kv_compress"), ("edit",), 960,
                         orderings=(("edit", "sana"), ("edit", "linfusion"), ("edit", "edit_sc_only")),
                         matches=(("edit", "edit_cf_q"),), paper_convert={"inherit": "qkvo"}),
    # MM-EDiT's eta is Eq. 6's per query, estimated from the image keys' moments ("moments"), with the softmax
    # pairs on the queries and keys before the ReLU ("raw"); every student keeps the last block's softmax
    # attention. docs/DIAGNOSIS.md has why (lindit diagnose) and the runs behind each choice.
    "sd3": FamilyPlan("mmdit", "mm_edit", ("mm_edit", "mm_edit_exact", "linear_mmdit_alpha", "sana_mmdit"),
                      ("mm_edit",), 240, convert={"mm_edit": {"eta": "moments", "softmax_qk": "raw"}},
                      convert_all={"keep_softmax": [-1]}, orderings=(("mm_edit", "linear_mmdit_alpha"),),
                      paper_convert={"inherit": "qkvo"}),
    # LiT Guideline 2: few heads (the teacher has 4). LiT's own L_simple (task) term, EDiT's feature term and
    # 960 steps (docs/DIAGNOSIS.md has the runs behind each).
    "dit": FamilyPlan("dit", "lit", ("lit",), ("lit",), 960, convert={"lit": {"heads": 2}},
                      loss={"task": 1.0, "feature": 0.5}, paper_convert={"heads": 2}),  # Guideline 4: inherit none
}

# Keys are lindit's family names (integrations.diffusers.families); a plan's teacher is a built-in teacher name.
assert set(FAMILIES) <= set(MODEL_FAMILIES), "demo families must be model families"


@dataclass
class DemoSettings:
    """The run's budget; ``quick()`` is the CI-sized one."""

    families: tuple[str, ...] = ("pixart", "sd3", "dit")
    quick: bool = False
    # Sized for `make demo`'s 15 minutes on 2 CPU cores with the latent-space teachers (about 1M parameters
    # each): 300 images per model and each family's steps per student (FamilyPlan.steps). The README says how
    # the recipe departs from the papers; docs/DIAGNOSIS.md and the stop notes have the runs behind it.
    steps: int | None = None  # optimisation steps per student (half attention-only, half everything); None:
    # each family's own (FamilyPlan.steps)
    batch_size: int = 16
    lr: float = 1e-3
    n_eval: int = 300  # images per model for FID, adherence and agreement
    sample_steps: int = 10
    guidance: float | None = None  # default: each teacher's recorded sampling guidance
    seed: int = 0
    # Seeds seed, seed + 1, ...: each repeats every distillation and the sampling of every model (demo/seeds.py).
    seeds: int = 1
    latency_sizes: tuple[int, ...] = (32, 64, 128, 256)  # px, one transformer forward, batch 1
    eval_prompt_seed: int = 1001  # held-out ShapesDataset streams: prompts and the FID reference set
    reference_seed: int = 1002
    dataset_size: int = 4096  # distillation images
    # Teacher projections the students start from (LiT Table 3 and Guideline 3; any of "qkvo"; LiT's Guideline 4
    # inherits none); "none" keeps lindit.convert's default of fresh attention weights.
    inherit: str = "qkvo"
    # Weight of the noise-prediction (task) loss in every stage (MM-EDiT's KD-only stage 2 aside); None: the
    # family's (FamilyPlan.loss; 0, distilling from the teacher alone, unless the family says otherwise).
    task_weight: float | None = None
    # First stage (half the steps): "student" distils with the recipe's terms on the student's own hidden
    # states; "teacher" fits each replaced layer to its teacher layer on the teacher's inputs (layer-wise
    # attention transfer; every family, LiT's single stage included, then trains everything with its recipe).
    feature_inputs: str = "student"
    # Weight of the guidance-direction loss (training/losses.py) in every stage: each distillation sample also
    # runs with the null prompt, so a step costs two student and two teacher forwards per sample.
    guidance_kd: float = 0.0
    # Weight of the feature term (each replaced layer's output against its teacher layer's, EDiT's feature
    # distillation) wherever the recipe's loss applies (not MM-EDiT's KD-only stage 2); None: the family's.
    feature_weight: float | None = None
    # Probability that a distillation caption (class) becomes the null one; None: the teacher's own (0.1).
    # Classifier-free guidance runs the student on the null prompt as often as on the real one.
    caption_dropout: float | None = 0.3
    # Learning-rate schedule of every stage (a diffusers ``get_scheduler`` name, after the warm-up): cosine
    # decays to zero at each stage's end.
    schedule: str = "cosine"
    # EMA of the student's weights (diffusers EMAModel): None keeps the last weights; a float is a fixed decay;
    # "warmup" is EMAModel's warm-up decay 1 - (1 + step)^(-2/3).
    ema: float | str | None = None
    # Students to distil instead of each family's list: lindit.convert method names or variants
    # (NAME:KEY=VALUE[,...], e.g. "edit_cf_q" or "mm_edit_exact:softmax_qk=raw"), reported under that name.
    students: tuple[str, ...] = ()
    # Also distil each family's paper student (its recipe's method: edit, mm_edit, lit) with the paper's own
    # recipe, as a row NAME@paper beside the demo's: what the demo's departures from the paper buy.
    paper_recipes: bool = False
    # Students distilled side by side, in worker processes that share the threads (None: one per thread, at most
    # one per student; 1: one after another in this process).
    jobs: int | None = None

    @classmethod
    def quick_settings(cls, **overrides) -> DemoSettings:
        # 120 steps in every family: with 40, LiT and MM-EDiT were still no closer to their teachers than the
        # mean image.
        base = dict(quick=True, steps=120, n_eval=120, sample_steps=10, latency_sizes=(32, 128), dataset_size=1024)
        return cls(**{**base, **overrides})

    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def steps_for(self, family: str) -> int:
        return FAMILIES[family].steps if self.steps is None else self.steps

    def methods(self, family: str) -> tuple[str, ...]:
        plan = FAMILIES[family]
        methods = self.students or (plan.quick_methods if self.quick else plan.methods)
        extra = (plan.recipe + PAPER,) if self.paper_recipes and plan.recipe + PAPER not in methods else ()
        return tuple(methods) + extra


def check_families(names) -> tuple[str, ...]:
    """The demo families ``names``, with deprecated aliases (``mmdit``: ``sd3``) replaced, and a warning."""
    out = []
    for name in names:
        if name in FAMILY_ALIASES:
            print(f"warning: demo family {name!r} is now called {FAMILY_ALIASES[name]!r}", file=sys.stderr)
            name = FAMILY_ALIASES[name]
        if name not in FAMILIES:
            raise ValueError(f"unknown demo family {name!r}; choose from {', '.join(FAMILIES)}")
        out.append(name)
    return tuple(dict.fromkeys(out))


def _inherit(inherit: str, method: str) -> dict:
    # kv_compress always keeps the teacher's projections (its whole point); others follow the setting.
    return {} if inherit == "none" or method == "kv_compress" else {"inherit": inherit}


def _loss(plan: FamilyPlan, settings: DemoSettings) -> dict:
    """The recipe's loss weights, without its task term unless the family's plan or the settings set one."""
    from ..training.config import RECIPES

    loss = {**asdict(RECIPES[plan.recipe]), "task": 0.0, "guidance": settings.guidance_kd, **plan.loss}
    chosen = {"task": settings.task_weight, "feature": settings.feature_weight}
    return {**loss, **{k: v for k, v in chosen.items() if v is not None}}


def _ema_config(ema: float | str | None) -> dict | None:
    if ema is None:
        return None
    return {"use_warmup": True} if ema == "warmup" else {"decay": float(ema)}


PAPER = "@paper"


def paper_recipe(student: str) -> tuple[str, bool]:
    """'lit@paper' -> ('lit', True): the student distilled with its paper's own recipe; 'lit' -> ('lit', False)."""
    return (student[: -len(PAPER)], True) if student.endswith(PAPER) else (student, False)


def _stages(plan: FamilyPlan, settings: DemoSettings, steps: int, size: int, paper: bool = False) -> list[dict]:
    """Half the steps on the replaced layers (lr), half on every weight (lr / 5); LiT trains everything.
    ``paper``: the loss is the recipe's own (task term on), as the paper trains."""
    from ..training.config import RECIPES

    first, recipe = steps // 2, plan.recipe
    loss = {**asdict(RECIPES[recipe]), "guidance": 0.0} if paper else _loss(plan, settings)
    stage1 = {"name": "attention", "trainable": "attention", "resolution": size, "steps": first,
              "lr": settings.lr, "loss": loss}
    stage2 = {"name": "all", "trainable": "all", "resolution": size, "steps": steps - first,
              "lr": settings.lr / 5, "loss": loss}
    if recipe == "mm_edit":
        # MM-EDiT stage 2: knowledge distillation only (and the guidance direction, when it is distilled)
        stage2["loss"] = {"task": 0.0, "kd": 1.0, "feature": 0.0, "guidance": settings.guidance_kd}
    if settings.feature_inputs == "teacher" and not paper:
        stage1.update(name="attention transfer", feature_inputs="teacher",
                      loss={"task": 0.0, "kd": 0.0, "feature": 1.0, "variance": 0.0})
    elif recipe == "lit":  # LiT trains every weight from the start
        return [{**stage2, "steps": steps, "lr": settings.lr}]
    return [stage1, stage2]


def run_config(family: str, student: str, settings: DemoSettings, cache: str | None = None) -> dict:
    """The lindit.training config distilling ``student`` (a method or NAME:KEY=VALUE variant) from the
    family's built-in teacher, on the shapes world or on ``cache``, that world encoded by ``lindit cache``."""
    plan, teacher = FAMILIES[family], settings_of(FAMILIES[family].teacher)
    spec_name, paper = paper_recipe(student)
    method, options = method_variant(spec_name)
    spec = {k: v for k, v in teacher.scheduler.items() if k != "class"}
    labels = teacher.conditioning == "labels"
    steps = settings.steps_for(family)
    stages = _stages(plan, settings, steps, teacher.size, paper)
    dropout = teacher.caption_dropout if settings.caption_dropout is None or paper else settings.caption_dropout
    if paper:
        convert = {**plan.paper_convert, **options}  # lindit.convert's defaults otherwise (inherit none)
    else:
        convert = {**_inherit(settings.inherit, method), **plan.convert_all, **plan.convert.get(method, {}), **options}
    world = {"n": settings.dataset_size, "seed": settings.seed, "kind": "class" if labels else "text"}
    if not labels:
        world["max_objects"] = teacher.max_objects
    return {
        "recipe": plan.recipe,
        "seed": settings.seed,
        "model": {"teacher": {"builtin": plan.teacher}, "method": method,
                  "convert": convert,
                  "vae": "builtin",
                  "conditioning": "labels" if labels else "builtin", "scheduler": spec},
        # One square bucket at the teacher's own size (the default multiple, 64 px, would render 64 px images).
        "data": {"source": {"cache": cache} if cache else {"world": world}, "batch_size": settings.batch_size,
                 "caption_dropout": dropout,
                 "aspect_ratios": [1.0], "bucket_multiple": teacher.size, "num_workers": 0},
        "stages": [s for s in stages if s["steps"] > 0],
        "optimizer": {"warmup_steps": min(10, steps // 4), "weight_decay": 0.0,
                      "schedule": settings.schedule},
        "ema": _ema_config(settings.ema),
        "training": {"mixed_precision": "no", "max_grad_norm": 1.0},
        "checkpointing": {"every": 10**9, "keep": 1},
        "logging": {"every": max(1, steps // 10), "progress_bar": True},
    }
