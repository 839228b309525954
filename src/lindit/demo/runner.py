"""The demo's steps: per family, the teacher's row, then convert + distil + measure each student."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..eval.measure import machine_info
from ..io import atomic_dir, check_output
from ..methods import method_variant
from ..training.config import parse_config
from ..world.teachers import SETTINGS_NAME, load_builtin_teacher, settings_of, teacher_dir
from .evaluate import EvalSet, eval_set, latency, quality, sample
from .plan import FAMILIES, DemoSettings, paper_recipe, run_config
from .report import latency_plot, sample_grid, write_json_report, write_markdown
from .seeds import combine


def run_demo(settings: DemoSettings, out: str | Path, command: str = "lindit demo", overwrite: bool = False) -> dict:
    """Run the demo into ``out`` and return report.json's content.

    ``out`` must be new (or an empty folder) unless ``overwrite``. The demo writes into a temporary sibling
    that replaces ``out`` at the end, so it only ever deletes what it created itself (and, when told to
    overwrite, the old ``out``)."""
    out, start = check_output(out, overwrite), time.perf_counter()
    for family in settings.families:  # fail before any work if a teacher is missing or a student does not fit
        teacher = load_builtin_teacher(FAMILIES[family].teacher)
        for student in settings.students:
            _check_student(family, student, teacher)
        for method in settings.methods(family):  # e.g. an unknown learning-rate schedule
            parse_config(run_config(family, method, settings))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        return _run(settings, tmp, command, start)


def _run(settings: DemoSettings, out: Path, command: str, start: float) -> dict:
    total = settings.seeds * sum(1 + len(settings.methods(f)) for f in settings.families)
    bar = tqdm(total=total, desc="lindit demo", unit="model", position=0)
    families = {family: _seeded_family(family, settings, out, bar) for family in settings.families}
    shutil.rmtree(out / "cache", ignore_errors=True)  # the encoded worlds: tens of MB no student needs now
    bar.close()
    threads = torch.get_num_threads()
    meta = {**asdict(settings), "steps_by_family": {f: settings.steps_for(f) for f in settings.families},
            "jobs_by_family": {f: worker_split(settings.jobs, len(settings.methods(f)), threads)[0]
                               for f in settings.families},
            "recipes": {f: _recipe(f, settings) for f in settings.families},
            "total_seconds": round(time.perf_counter() - start, 1), "command": command,
            "machine": machine_info(torch.device("cpu"))}
    report = write_json_report(out, meta, families)
    latency_plot(out / "latency.png", families)
    write_markdown(out, report, command)
    return report


def _seeded_family(family: str, settings: DemoSettings, out: Path, bar) -> dict[str, dict]:
    """The family's rows, each the mean and spread over the seeds (one seed: that seed's rows). With several
    seeds, seed S's students live in OUT/seed-S/students; grids and latency come from the first seed."""
    if settings.seeds == 1:
        return _family(family, settings, out, bar)
    runs = [_family(family, replace(settings, seed=s), out, bar, f"seed-{s}", first=k == 0)
            for k, s in enumerate(settings.seed_list())]
    return {name: combine([run[name] for run in runs], settings.seed_list()) for name in runs[0]}


def _family(family: str, settings: DemoSettings, out: Path, bar, seed_dir: str | None = None,
            first: bool = True) -> dict[str, dict]:
    plan, teacher_settings = FAMILIES[family], settings_of(FAMILIES[family].teacher)
    guidance = settings.guidance if settings.guidance is not None else teacher_settings.guidance
    evals = eval_set(plan.teacher, settings.n_eval, settings.eval_prompt_seed, settings.reference_seed)
    teacher = load_builtin_teacher(plan.teacher)
    measure = lambda model, ref: _measure(plan.teacher, model, evals, ref, settings, guidance, first)  # noqa: E731
    bar.set_postfix_str(f"{family}: teacher (seed {settings.seed})")
    teacher_images, rows = measure(teacher, None)
    recorded = json.loads((teacher_dir(plan.teacher) / SETTINGS_NAME).read_text())
    rows.update(train_steps=recorded["steps"], train_seconds=recorded["train_seconds"])
    table, grid = {"teacher": rows}, {"teacher": teacher_images}
    _log(family, "teacher", rows, settings.seed)
    bar.update()
    bar.set_postfix_str(f"{family}: encoding the distillation images")
    cache = _encode_world(family, settings, out / "cache" / "-".join(filter(None, (family, seed_dir))))
    trained = _distill_all(family, settings, out / seed_dir if seed_dir else out, cache, bar)
    for method, (folder, seconds) in trained.items():
        bar.set_postfix_str(f"{family}: measuring {method}")
        grid[method], table[method] = measure(_load_student(folder, settings), teacher_images)
        table[method].update(train_steps=settings.steps_for(family), train_seconds=round(seconds, 1))
        _log(family, method, table[method], settings.seed)
        bar.update()
    if first:
        sample_grid(out / f"{family}_samples.png", grid, [str(c) for c in _titles(family, evals)])
    return table


def _recipe(family: str, settings: DemoSettings) -> dict:
    """What the report states of a family's recipe: its stages and every student's convert options."""
    configs = {m: run_config(family, m, settings) for m in settings.methods(family)}
    ours = [c for m, c in configs.items() if not paper_recipe(m)[1]]
    papers = [c for m, c in configs.items() if paper_recipe(m)[1]]
    recipe = {"stages": (ours or papers)[0]["stages"], "convert": {m: c["model"]["convert"] for m, c in configs.items()}}
    if papers:  # NAME@paper rows: the paper's own stages and the teacher's caption dropout
        recipe["paper"] = {"stages": papers[0]["stages"], "caption_dropout": papers[0]["data"]["caption_dropout"]}
    return recipe


def _encode_world(family: str, settings: DemoSettings, folder: Path) -> str:
    """Encode the family's distillation images (world autoencoder) and prompts (text encoder) once, as
    ``lindit cache`` does: every student then reads the same latents instead of rendering and encoding each
    batch again."""
    from ..training.cache_cli import encode

    cfg = parse_config(run_config(family, settings.methods(family)[0], settings))
    shutil.rmtree(folder, ignore_errors=True)  # lindit cache keeps shards it finds: a crashed run's may be stale
    encode(cfg, folder, sorted({s.resolution for s in cfg.stages}), batch_size=settings.batch_size, device="cpu")
    return str(folder)


def _check_student(family: str, student: str, teacher) -> None:
    from ..integrations.diffusers import convert
    from ..methods import check_options

    name, options = method_variant(paper_recipe(student)[0])
    try:
        check_options(name, options)
        convert(teacher, name, **options)
    except (ValueError, TypeError) as e:
        raise ValueError(f"student {student!r} does not fit the {family} family: {e}") from None


def _titles(family: str, evals: EvalSet) -> list:
    if not evals.class_conditional:
        return evals.conditions
    from ..world.shapes import ShapesClassDataset

    return [ShapesClassDataset.class_names[c] for c in evals.conditions]


def _measure(teacher: str, model, evals: EvalSet, teacher_images, settings: DemoSettings, guidance: float,
             timed: bool = True):
    images = sample(teacher, model, evals, settings.sample_steps, guidance, settings.seed)
    row = quality(images, evals, teacher_images)
    if not timed:  # a later seed: latency does not depend on it
        return images, row
    by_size = latency(teacher, model, settings.latency_sizes)
    row.update(latency_s=round(by_size[settings.latency_sizes[0]], 6),
               latency_s_by_size={str(k): round(v, 6) for k, v in by_size.items()})
    return images, row


def _distill_all(family: str, settings: DemoSettings, out: Path, cache: str, bar) -> dict[str, tuple[Path, float]]:
    """Distil every student of the family: method -> (its folder, seconds). With ``jobs`` > 1, that many
    students at a time in worker processes sharing the threads (tiny models use extra threads poorly, so
    students side by side finish sooner than one after another); latency is measured afterwards, alone."""
    methods = settings.methods(family)
    jobs, threads = worker_split(settings.jobs, len(methods), torch.get_num_threads())
    if jobs == 1:
        trained = {}
        for method in methods:
            bar.set_postfix_str(f"{family}: distilling {method}")
            trained[method] = _distill(family, method, settings, out, cache)
        return trained
    bar.set_postfix_str(f"{family}: distilling {len(methods)} students, {jobs} at a time")
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {m: pool.submit(_distill, family, m, settings, out, cache, False) for m in methods}
        return {m: f.result() for m, f in futures.items()}


def worker_split(jobs: int | None, students: int, threads: int) -> tuple[int, int]:
    """(processes, threads each): ``jobs`` None takes one process per thread, at most one per student."""
    jobs = max(1, min(jobs or threads, students))
    return jobs, max(1, threads // jobs)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _distill(family: str, method: str, settings: DemoSettings, out: Path, cache: str,
             progress_bar: bool = True) -> tuple[Path, float]:
    from ..training import distill

    folder = out / "students" / family / re.sub(r"[^\w.=-]+", "_", method)  # variants: edit:cf_reduction=8
    config = run_config(family, method, settings, cache)
    config["logging"]["progress_bar"] = progress_bar  # workers' bars would interleave
    start = time.perf_counter()
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    distill(config, folder)
    return folder, time.perf_counter() - start


def _load_student(folder: Path, settings: DemoSettings):
    from ..integrations.diffusers import load

    return load(folder / "ema" if settings.ema is not None else folder)


def _log(family: str, name: str, row: dict, seed: int) -> None:
    psnr = "" if row["psnr_to_teacher"] is None else f", PSNR {row['psnr_to_teacher']:.1f} dB"
    timing = f", {1000 * row['latency_s']:.2f} ms/forward" if "latency_s" in row else ""
    tqdm.write(f"{family:>6} {name:<20} seed {seed}: FID {row['fid']:8.1f}, adherence {row['adherence']:6.1%}"
               f"{psnr}{timing}")
