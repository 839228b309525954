"""The training loop on accelerate, following diffusers' training examples.

``Accelerator(gradient_accumulation_steps, mixed_precision, project_config)``; only the student goes through
``prepare`` (float32 master weights, autocast in bf16/fp16); the teacher is frozen, cast to the weight dtype
and run under no-grad; ``accelerator.accumulate`` around each micro-step, clipping when gradients are
synchronised, and one optimisation step counted per synchronised step. Each stage gets its own trainable
set, AdamW and LR schedule, so the student is unwrapped and prepared again per stage.

Randomness of a micro-step (latent sample, caption dropout, noise, timesteps) comes from a generator seeded
by (seed, process, stage, data position): a resumed run draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader

from ..dtypes import MIXED_PRECISION
from ..integrations.diffusers import converted_layers
from ..integrations.diffusers.families import FAMILIES
from .checkpoint import checkpoint_root, load_checkpoint, read_state, save_checkpoint
from .components import Components, build_components, check_sources, stage_data, student_for_stage
from .config import RunConfig, load_config, parse_config
from .divergence import NonFiniteGuard, apply_stage_lr, check_finite_weights
from .data import BatchOrder, BucketBatches, collate, drop_captions
from .hooks import FeatureCapture, TeacherForcing
from .losses import TERMS, feature_loss, loss_terms, total_loss, with_null_pairs
from .metrics import MetricsLog, postfix, progress_bar, tensorboard_available
from .student import merge_lora, rebuild, save_student, trainable_parameters
from .run_folder import claim_run
from .schema import to_dict


def distill(config: RunConfig | dict | str | Path, out_dir: str | Path, resume: str | Path | None = None,
            max_steps: int | None = None, accept_config_changes: bool = False) -> Path:  # fmt: skip
    """Train a student as ``config`` says; the final student is saved into ``out_dir`` (``lindit.load(out_dir)``).

    out_dir belongs to this run (``run_folder``): a fresh run needs it new or empty, and it is locked while
    the run lasts. resume: ``"latest"`` (the newest complete checkpoint in ``out_dir/checkpoints``, or a fresh
    start if there is none) or a checkpoint folder; the config must be the run's own unless
    ``accept_config_changes``. max_steps: stop after this optimisation step (counted over all stages),
    writing a checkpoint first, so a later call with ``resume="latest"`` continues. A run whose loss or
    gradients stay non-finite stops with ``TrainingDiverged`` (``training.max_nonfinite_steps``).
    """
    cfg = as_config(config)
    out_dir = Path(out_dir)
    check_sources(cfg)
    with claim_run(out_dir, cfg, resume, accept_config_changes) as ckpt:
        accelerator = make_accelerator(cfg, out_dir)
        try:
            set_seed(cfg.seed)  # the student's fresh attention weights are drawn here: same on every process
            torch.backends.cuda.matmul.allow_tf32 = cfg.training.allow_tf32
            comp = build_components(cfg, accelerator.device)
            return Trainer(cfg, out_dir, accelerator, comp).run(ckpt, max_steps)
        finally:
            # accelerate keeps mixed precision and accumulation settings in process-wide singletons; forget
            # them so that another distill() in this process (notebooks, tests) may use other settings. The
            # process group (PartialState) is kept.
            AcceleratorState._reset_state()
            GradientState._reset_state()


def as_config(config) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    return parse_config(config) if isinstance(config, dict) else load_config(config)


def make_accelerator(cfg: RunConfig, out_dir: Path) -> Accelerator:
    tensorboard = cfg.logging.tensorboard and tensorboard_available()
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.training.gradient_accumulation_steps,
        mixed_precision=cfg.training.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
        log_with="tensorboard" if tensorboard else None,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.training.find_unused_parameters)],
    )
    if tensorboard:
        accelerator.init_trackers("lindit")
    return accelerator


def step_generator(seed: int, rank: int, stage: int, position: int) -> torch.Generator:
    """A CPU generator for one micro-step, a pure function of where the run is."""
    state = np.random.SeedSequence([seed, rank, stage, position]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir: Path, accelerator: Accelerator, comp: Components):
        self.cfg, self.out_dir, self.acc, self.comp = cfg, out_dir, accelerator, comp
        self.root = checkpoint_root(out_dir)
        self.global_step = 0
        self.guard = NonFiniteGuard(cfg, self.root)
        self.resumed_window: dict = {}
        self.param_names = [n for n, _ in comp.student.named_parameters()]
        self.ema = None
        if cfg.ema is not None:
            # model_cls / model_config as in diffusers' training scripts: EMAModel can rebuild the student
            self.ema = EMAModel(comp.student.parameters(), decay=cfg.ema.decay,
                                update_after_step=cfg.ema.update_after_step, use_ema_warmup=cfg.ema.use_warmup,
                                model_cls=type(comp.student), model_config=comp.student.config)
            self.ema.to(accelerator.device)

    def run(self, ckpt: Path | None, max_steps: int | None) -> Path:
        """Train from checkpoint ``ckpt`` (None: from step 0) to the end or ``max_steps``; save the student."""
        state = read_state(ckpt) if ckpt else {"global_step": 0, "stage": 0, "stage_step": 0, "position": 0}
        self.global_step = state["global_step"]
        self.resumed_window = state.get("log_window", {})
        if self.acc.is_main_process:
            print(f"lindit distill: {'resuming from ' + str(ckpt) if ckpt else 'starting'} "
                  f"(step {self.global_step} of {self.cfg.total_steps()})")  # fmt: skip
        # rows after the checkpoint's step (an interrupted attempt's) are dropped: the file reads as one run
        self.metrics = MetricsLog(self.out_dir / "metrics.csv", state["global_step"]) \
            if self.acc.is_main_process else None  # fmt: skip
        self.bar = progress_bar(self.cfg.total_steps(), self.global_step,
                                self.acc.is_main_process and self.cfg.logging.progress_bar)
        for i in range(state["stage"], len(self.cfg.stages)):
            resumed = i == state["stage"]
            position = state["position"] if resumed else 0
            stage_step = state["stage_step"] if resumed else 0
            if self.train_stage(i, ckpt if resumed else None, stage_step, position, max_steps):
                break
        self.bar.close()
        return self.finish()

    def train_stage(self, i: int, ckpt: Path | None, stage_step: int, position: int, max_steps) -> bool:
        """Run stage i from (stage_step, position); True if ``max_steps`` stopped the run."""
        stage, comp, acc = self.cfg.stages[i], self.comp, self.acc
        student = student_for_stage(comp, i)
        if self.cfg.training.gradient_checkpointing:
            student.enable_gradient_checkpointing()
        weights = asdict(stage.loss)
        teacher = comp.teachers.load(comp.teachers.key_of(i)) if stage.loss.needs_teacher() else None
        params = trainable_parameters(student, stage.trainable)
        model, optimizer, scheduler = self._prepare(student, params, stage)
        if ckpt is not None:
            load_checkpoint(acc, ckpt, self.ema, self.param_names)
            apply_stage_lr(scheduler, stage.lr)  # a resume that lowers the lr (the way back from divergence)
        data, bucket_of, null = stage_data(comp, stage)
        self.null = null if null is not None else comp.encoders.null_condition()
        batches = BucketBatches(bucket_of, stage.batch_size or self.cfg.data.batch_size, self.cfg.seed + i,
                                acc.process_index, acc.num_processes)  # fmt: skip
        loader = DataLoader(data, batch_sampler=BatchOrder(batches, position), collate_fn=collate,
                            num_workers=self.cfg.data.num_workers)  # fmt: skip
        forced = stage.feature_inputs == "teacher"
        # Teacher forcing fits every replaced layer (Mix-FFNs too: they are trainable and get no other signal).
        names = list(converted_layers(student, attention_only=not forced)) if weights["feature"] > 0 else []
        with ExitStack() as hooks:  # feature hooks exist only while this stage trains
            caps = [hooks.enter_context(FeatureCapture(student, names)),
                    hooks.enter_context(FeatureCapture(teacher, names, inputs=forced))] if names else None
            forcing = hooks.enter_context(TeacherForcing(student, names)) if forced else None
            loop = _StageLoop(self, i, model, student, teacher, optimizer, scheduler, params, weights, caps, forcing)
            if ckpt is not None:
                loop.restore_window(self.resumed_window)
            stopped = loop.run(loader, stage_step, position, max_steps)
        comp.student, self.model = acc.unwrap_model(model, keep_fp32_wrapper=False), model
        if teacher is not None and i + 1 < len(self.cfg.stages) and not self.cfg.stages[i + 1].loss.needs_teacher():
            comp.teachers.release()
        return stopped

    def _prepare(self, student, params, stage):
        cfg = self.cfg
        optimizer = torch.optim.AdamW(params, lr=stage.lr, betas=tuple(cfg.optimizer.betas),
                                      weight_decay=cfg.optimizer.weight_decay, eps=cfg.optimizer.eps)  # fmt: skip
        warmup = cfg.optimizer.warmup_steps if stage.warmup_steps is None else stage.warmup_steps
        # A prepared scheduler steps once per process per optimisation step (diffusers' examples scale likewise).
        n = self.acc.num_processes
        scheduler = get_scheduler(cfg.optimizer.schedule, optimizer, num_warmup_steps=warmup * n,
                                  num_training_steps=stage.steps * n)  # fmt: skip
        self.acc.free_memory()  # forget the previous stage's model, optimizer and scheduler
        return self.acc.prepare(student, optimizer, scheduler)

    def checkpoint(self, model, stage: int, stage_step: int, position: int, window: dict) -> None:
        """A checkpoint of finite weights (a non-finite model is never saved: ``TrainingDiverged``), with
        what the metrics window had gathered, so that a resumed run logs exactly the rows of an
        uninterrupted one."""
        if self.guard.in_a_row:  # these weights just gave a non-finite loss: keep the last good checkpoint
            return
        check_finite_weights(self.acc, model, self.guard, stage, self.global_step)
        state = {"global_step": self.global_step, "stage": stage, "stage_step": stage_step, "position": position,
                 "log_window": window}
        save_checkpoint(self.acc, self.root, self.global_step, state, self.ema, self.param_names,
                        self.cfg.checkpointing.keep)  # fmt: skip

    def finish(self) -> Path:
        """Save the student (and its EMA) into ``out_dir``; returns ``out_dir``."""
        state = self.acc.get_state_dict(self.model)  # on every process: gathers FSDP / ZeRO-3 shards
        check_finite_weights(self.acc, self.model, self.guard, len(self.cfg.stages) - 1, self.global_step)
        if self.acc.is_main_process:
            for folder, averaged in ((self.out_dir, False), (self.out_dir / "ema", True)):
                if averaged and self.ema is None:
                    continue
                student = rebuild(self.comp.student, state)
                if averaged:  # the rebuilt student is a copy: overwrite it with the averages
                    self.ema.copy_to(student.parameters())
                student = merge_lora(student, folder / "lora")  # LoRA training: adapters merged
                student.lindit_recipe = to_dict(self.cfg)  # for the model card
                save_student(student, folder)
        self.acc.wait_for_everyone()
        self.acc.end_training()
        return self.out_dir


class _StageLoop:
    """The micro-steps of one stage."""

    def __init__(self, trainer: Trainer, index, model, student, teacher, optimizer, scheduler, params, weights, caps,
                 forcing: TeacherForcing | None = None):  # fmt: skip
        self.t, self.index, self.model, self.student, self.teacher = trainer, index, model, student, teacher
        self.optimizer, self.scheduler, self.params, self.weights, self.caps = optimizer, scheduler, params, weights, caps
        self.forcing = forcing
        self.stage = trainer.cfg.stages[index]
        self.window: dict[str, list[torch.Tensor]] = {}
        self.clock = time.perf_counter()

    def run(self, loader, stage_step: int, position: int, max_steps: int | None) -> bool:
        t, acc = self.t, self.t.acc
        if stage_step >= self.stage.steps:
            return False
        for batch in loader:
            position += 1
            with acc.accumulate(self.model):
                terms = self.losses(batch, step_generator(t.cfg.seed, acc.process_index, self.index, position))
                loss = total_loss(self.weights, terms)
                acc.backward(loss)
                t.guard.see_loss(loss)
                finite = t.guard.check_step(acc, self.params) if acc.sync_gradients else True
                if finite or t.guard.scaler_skips(acc):  # the fp16 scaler skips the update and lowers its scale
                    self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            self._remember(loss, terms)
            if not acc.sync_gradients:
                continue
            t.global_step += 1
            stage_step += 1
            t.guard.count(finite, t.global_step, self.index)  # TrainingDiverged after too many in a row
            if t.ema is not None and finite:
                t.ema.step(self.student.parameters())
            t.bar.update(1)
            done = stage_step >= self.stage.steps
            stop = max_steps is not None and t.global_step >= max_steps
            if t.global_step % t.cfg.logging.every == 0 or done:  # rows of the uninterrupted run only
                self.log()
            if t.global_step % t.cfg.checkpointing.every == 0 or done or stop:
                t.checkpoint(self.model, self.index, stage_step, position, self.window_state())
            if done or stop:
                return stop
        return False

    def losses(self, batch: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The unweighted loss terms of one micro-batch."""
        comp, device = self.t.comp, self.t.acc.device
        moments, cond = self.inputs(batch)
        latents = moments["mean"] + moments["std"] * torch.randn(moments["mean"].shape, generator=gen).to(device)
        cond = drop_captions(cond, self.t.null, self.t.cfg.data.caption_dropout, gen)
        noisy = comp.objective(latents, gen)
        if self.weights["guidance"] > 0:  # each sample also with the null prompt: the guidance direction
            noisy, cond = with_null_pairs(noisy, cond, self.t.null)
        if self.forcing is not None:
            return self.forced_losses(noisy, cond)
        s_rec, t_rec = (c.recording() for c in self.caps) if self.caps else (nullcontext({}), nullcontext({}))
        with s_rec as s_feats:
            out = self.model(**model_inputs(comp, self.student, noisy, cond, torch.float32))[0]
        t_out, t_feats = (None, {}) if self.teacher is None else self.teacher_forward(noisy, cond, t_rec)
        return loss_terms(self.weights, noisy, out, comp.in_channels, t_out, s_feats, t_feats)

    def teacher_forward(self, noisy, cond: dict, recording) -> tuple[torch.Tensor, dict]:
        comp, dtype = self.t.comp, MIXED_PRECISION[self.t.cfg.training.mixed_precision]
        with torch.no_grad(), self.t.acc.autocast(), recording as t_feats:
            t_out = self.teacher(**model_inputs(comp, self.teacher, noisy, cond, dtype))[0]
        return t_out, t_feats

    def forced_losses(self, noisy, cond: dict) -> dict[str, torch.Tensor]:
        """Layer-wise attention transfer: the teacher runs first, then every replaced student layer runs on
        its teacher layer's input (the student's forward goes through the prepared model, so DDP syncs)."""
        s_cap, t_cap = self.caps
        _, t_feats = self.teacher_forward(noisy, cond, t_cap.recording())
        self.forcing.feed(t_cap.inputs)
        with s_cap.recording() as s_feats:
            self.model(**model_inputs(self.t.comp, self.student, noisy, cond, torch.float32))
        return {"feature": feature_loss(s_feats, t_feats)}  # the stage's only term (checked by the config)

    def inputs(self, batch: dict) -> tuple[dict, dict]:
        """Latent moments {"mean", "std"} (B, C, h, w) and conditioning, on the device: encoded or cached."""
        device, enc = self.t.acc.device, self.t.comp.encoders
        if "image" in batch:
            moments = enc.encode_images(batch["image"].to(device))
            cond = enc.encode_prompts(batch["prompt"])
        else:
            moments = {k: batch[k] for k in ("mean", "std")}
            cond = {k[len("cond.") :]: v for k, v in batch.items() if k.startswith("cond.")}
        to = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return to(moments), to(cond)

    def window_state(self) -> dict:
        """The metrics window of every process as plain floats (float32 values, exact in JSON)."""
        names = list(self.window)
        if not names:
            return {}
        local = torch.stack([torch.stack(self.window[n]) for n in names], 1)  # (micro, terms)
        every = self.t.acc.gather(local.to(self.t.acc.device))  # (processes * micro, terms)
        return {"names": names, "values": every.view(self.t.acc.num_processes, *local.shape).tolist()}

    def restore_window(self, state: dict) -> None:
        if state:
            rows = torch.tensor(state["values"][self.t.acc.process_index], dtype=torch.float32)  # (micro, terms)
            rows = rows.to(self.t.acc.device)
            self.window = {name: list(rows[:, j]) for j, name in enumerate(state["names"])}

    def _remember(self, loss: torch.Tensor, terms: dict) -> None:
        for name, value in {"loss": loss, **terms}.items():  # tensors: no device sync until the next log
            self.window.setdefault(name, []).append(value.detach().float())

    def log(self) -> None:
        """Average the window over micro-steps and processes; write a metrics row (main process)."""
        t, acc = self.t, self.t.acc
        names = ["loss", *[n for n in TERMS if n in self.window]]
        local = torch.stack([torch.stack(self.window[n]).mean() for n in names]).to(acc.device)
        means = acc.reduce(local, reduction="mean").tolist()
        micro = len(self.window["loss"])
        elapsed = time.perf_counter() - self.clock
        row = {"step": t.global_step, "stage": self.index, "lr": float(self.scheduler.get_last_lr()[0]),
               **dict(zip(names, means)),
               "samples_per_s": micro * (self.stage.batch_size or t.cfg.data.batch_size) * acc.num_processes / elapsed}
        self.window, self.clock = {}, time.perf_counter()
        if acc.is_main_process:
            t.metrics.write(row)
            t.bar.set_postfix(postfix(row))
        acc.log({k: v for k, v in row.items() if isinstance(v, float)}, step=t.global_step)


def model_inputs(comp: Components, model, noisy, cond: dict, dtype: torch.dtype) -> dict:
    """Keyword arguments of a diffusers transformer forward (float inputs cast to ``dtype``)."""
    cast = lambda v: v.to(dtype) if v.is_floating_point() else v  # noqa: E731
    kwargs = {"hidden_states": cast(noisy.noisy), "timestep": noisy.timesteps, "return_dict": False,
              **{k: cast(v) for k, v in cond.items()}}  # fmt: skip
    if FAMILIES[comp.family].micro_conditions:
        kwargs["added_cond_kwargs"] = pixart_conditions(model, noisy.noisy, comp.vae_scale, dtype)
    return kwargs


def pixart_conditions(model, latents: torch.Tensor, vae_scale: int, dtype) -> dict:
    """PixArt's micro-conditions, as PixArtSigmaPipeline passes them: image size and aspect ratio in pixels."""
    if not getattr(model, "use_additional_conditions", False):
        return {"resolution": None, "aspect_ratio": None}
    b, h, w = latents.shape[0], latents.shape[-2] * vae_scale, latents.shape[-1] * vae_scale
    resolution = torch.tensor([[h, w]], dtype=dtype, device=latents.device).repeat(b, 1)  # (B, 2)
    aspect = torch.tensor([[h / w]], dtype=dtype, device=latents.device).repeat(b, 1)  # (B, 1)
    return {"resolution": resolution, "aspect_ratio": aspect}
