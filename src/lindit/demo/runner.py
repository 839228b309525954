"""The demo's steps: per family, the teacher's row, then convert + distil + measure each student."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..eval.measure import machine_info
from ..io import atomic_dir, check_output
from ..methods import method_variant
from ..training.config import parse_config
from ..world.teachers import SETTINGS_NAME, load_builtin_teacher, settings_of, teacher_dir
from .evaluate import EvalSet, agreement, eval_set, latency, sample, scores
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


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity
class _World:
    """What every model of one (seed, family) is measured against, and where its students go."""

    seed: int
    family: str
    evals: EvalSet
    guidance: float
    cache: str  # the encoded distillation images
    students: Path  # the folder above students/FAMILY/METHOD


@dataclass(frozen=True, eq=False)
class _Job:
    """One model of the report: the teacher (``method`` None) sampled, or a student distilled and sampled."""

    world: _World
    method: str | None
    steps: int  # what orders the queue: longest first, so the last models finish together


def _run(settings: DemoSettings, out: Path, command: str, start: float) -> dict:
    """Every model of every seed is one job (distil, then sample and score); the jobs share one pool of
    worker processes, longest first, so no core idles while a family's last student trains. Latency is
    measured afterwards in this process, alone."""
    seeds = settings.seed_list() if settings.seeds > 1 else [settings.seed]
    jobs_list = [_Job(world, m, settings.steps_for(world.family) if m else 0)
                 for world in _worlds(settings, seeds, out) for m in (None, *settings.methods(world.family))]
    bar = tqdm(total=len(jobs_list), desc="lindit demo", unit="model", position=0)
    results = _run_jobs(queue(jobs_list), settings, bar)
    shutil.rmtree(out / "cache", ignore_errors=True)  # the encoded worlds: tens of MB no student needs now
    bar.set_postfix_str("latency")
    families = {}
    for family in settings.families:
        tables = [_table(family, seed, settings, results) for seed in seeds]
        families[family] = tables[0] if len(seeds) == 1 else {
            name: combine([t[name] for t in tables], seeds) for name in tables[0]}
        first = [j for j in jobs_list if j.world.family == family and j.world.seed == seeds[0]]
        sample_grid(out / f"{family}_samples.png", {_name(j): results[j][0] for j in first},
                    [str(c) for c in _titles(family, first[0].world.evals)])
    bar.close()
    threads = torch.get_num_threads()
    meta = {**asdict(settings), "steps_by_family": {f: settings.steps_for(f) for f in settings.families},
            "jobs": worker_split(settings.jobs, len(jobs_list), threads)[0],
            "recipes": {f: _recipe(f, settings) for f in settings.families},
            "total_seconds": round(time.perf_counter() - start, 1), "command": command,
            "machine": machine_info(torch.device("cpu"))}
    report = write_json_report(out, meta, families)
    latency_plot(out / "latency.png", families)
    write_markdown(out, report, command)
    return report


def queue(jobs: list[_Job]) -> list[_Job]:
    """The pool's order: longest distillation first, so the last jobs are short and finish together (the sort
    is stable: equal jobs keep the report's order, and the teachers, with nothing to distil, come last)."""
    return sorted(jobs, key=lambda j: -j.steps)


def _worlds(settings: DemoSettings, seeds: list[int], out: Path) -> list[_World]:
    """Per seed and family: the held-out prompts and the encoded distillation images. With several seeds,
    seed S's students live in OUT/seed-S/students."""
    worlds = []
    for seed in seeds:
        seed_dir = f"seed-{seed}" if len(seeds) > 1 else None
        for family in settings.families:
            plan, seeded = FAMILIES[family], replace(settings, seed=seed)
            recorded = settings_of(plan.teacher).guidance
            cache = out / "cache" / "-".join(filter(None, (family, seed_dir)))
            tqdm.write(f"{family}: encoding the distillation images (seed {seed})")
            worlds.append(_World(seed, family, eval_set(plan.teacher, settings.n_eval, settings.eval_prompt_seed,
                                                        settings.reference_seed),
                                 settings.guidance if settings.guidance is not None else recorded,
                                 _encode_world(family, seeded, cache), out / seed_dir if seed_dir else out))
    return worlds


def _run_jobs(jobs: list[_Job], settings: DemoSettings, bar) -> dict[_Job, tuple]:
    """job -> (images, row, seconds to train). With ``jobs`` > 1, that many at a time in worker processes
    sharing the threads (tiny models use extra threads poorly, so models side by side finish sooner than
    one after another)."""
    processes, threads = worker_split(settings.jobs, len(jobs), torch.get_num_threads())
    results = {}
    if processes == 1:
        for job in jobs:
            bar.set_postfix_str(f"{job.world.family}: {_name(job)} (seed {job.world.seed})")
            results[job] = _model(job, settings, progress_bar=True)
            _done(job, results, bar)
        return results
    bar.set_postfix_str(f"{len(jobs)} models, {processes} at a time")
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(_model, job, settings, False): job for job in jobs}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            _done(futures[future], results, bar)
    finally:  # a failed model stops the demo without waiting for the queued ones
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _model(job: _Job, settings: DemoSettings, progress_bar: bool) -> tuple[torch.Tensor, dict, float]:
    """(images, FID and adherence, seconds to train) of one model; a student is distilled first."""
    world, plan = job.world, FAMILIES[job.world.family]
    seeded, seconds = replace(settings, seed=world.seed), 0.0
    if job.method is None:
        model = load_builtin_teacher(plan.teacher)
    else:
        folder, seconds = _distill(world.family, job.method, seeded, world.students, world.cache, progress_bar)
        model = _load_student(folder, settings)
    images = sample(plan.teacher, model, world.evals, settings.sample_steps, world.guidance, world.seed)
    return images, scores(images, world.evals), seconds


def _done(job: _Job, results: dict, bar) -> None:
    images, row, _ = results[job]
    tqdm.write(f"{job.world.family:>6} {_name(job):<20} seed {job.world.seed}: FID {row['fid']:8.1f}, "
               f"adherence {row['adherence']:6.1%}")
    bar.update()


def _table(family: str, seed: int, settings: DemoSettings, results: dict) -> dict[str, dict]:
    """The family's rows for one seed: scores, agreement with the teacher's images, latency (first seed
    only: it does not depend on the seed) and training."""
    jobs = {_name(j): j for j in results if j.world.family == family and j.world.seed == seed}
    jobs = {name: jobs[name] for name in ("teacher", *settings.methods(family))}  # the report's order
    teacher_images = results[jobs["teacher"]][0]
    timed = seed == (settings.seed_list()[0] if settings.seeds > 1 else settings.seed)
    table = {}
    for name, job in jobs.items():
        images, scored, seconds = results[job]
        row = {**scored, **agreement(images, None if job.method is None else teacher_images)}
        if timed:
            row.update(_latency(job, settings))
        table[name] = {**row, **_training(job, settings, seconds)}
    return table


def _latency(job: _Job, settings: DemoSettings) -> dict:
    teacher = FAMILIES[job.world.family].teacher
    if job.method is None:
        model = load_builtin_teacher(teacher)
    else:
        model = _load_student(_student_folder(job.world.students, job.world.family, job.method), settings)
    by_size = latency(teacher, model, settings.latency_sizes)
    tqdm.write(f"{job.world.family:>6} {_name(job):<20} {1000 * by_size[settings.latency_sizes[0]]:.2f} ms/forward")
    return {"latency_s": round(by_size[settings.latency_sizes[0]], 6),
            "latency_s_by_size": {str(k): round(v, 6) for k, v in by_size.items()}}


def _training(job: _Job, settings: DemoSettings, seconds: float) -> dict:
    if job.method is not None:
        return {"train_steps": settings.steps_for(job.world.family), "train_seconds": round(seconds, 1)}
    recorded = json.loads((teacher_dir(FAMILIES[job.world.family].teacher) / SETTINGS_NAME).read_text())
    return {"train_steps": recorded["steps"], "train_seconds": recorded["train_seconds"]}


def _name(job: _Job) -> str:
    return "teacher" if job.method is None else job.method


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
    from ..training.cache import encode

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


def worker_split(jobs: int | None, models: int, threads: int) -> tuple[int, int]:
    """(processes, threads each): ``jobs`` None takes one process per thread, at most one per model."""
    jobs = max(1, min(jobs or threads, models))
    return jobs, max(1, threads // jobs)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _distill(family: str, method: str, settings: DemoSettings, out: Path, cache: str,
             progress_bar: bool = True) -> tuple[Path, float]:
    from ..training import distill

    folder = _student_folder(out, family, method)
    config = run_config(family, method, settings, cache)
    config["logging"]["progress_bar"] = progress_bar  # workers' bars would interleave
    start = time.perf_counter()
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    distill(config, folder)
    return folder, time.perf_counter() - start


def _student_folder(out: Path, family: str, method: str) -> Path:
    return out / "students" / family / re.sub(r"[^\w.=-]+", "_", method)  # variants: edit:cf_reduction=8


def _load_student(folder: Path, settings: DemoSettings):
    from ..integrations.diffusers import load

    return load(folder / "ema" if settings.ema is not None else folder)


