"""The demo's outputs: report.json (the schema other tools read), report.md, sample grids, latency plot.

report.json: {"settings": {...}, "families": {FAMILY: {"teacher": ROW, METHOD: ROW, ...}}, "checks": [...]}
with ROW = {"fid", "adherence" (fraction), "mse_to_teacher", "psnr_to_teacher" (null for the teacher),
"latency_s" (one forward at the world's size), "latency_s_by_size", "train_steps", "train_seconds"}; the
teacher's row adds "mse_unpaired", the chance level of agreement (its images of different prompts). With
several seeds the quality values are means over seeds and a row adds "sd" (per metric), "seeds" and
"per_seed"; latency is the first seed's. A check is {"claim", "verdict", "reproduced", "detail", "margin",
"noise"} (``seeds.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io import atomic_path, write_json, write_text
from .plan import FAMILIES, PAPER
from .seeds import SPREAD, noise, sd, verdict

FAMILY_TITLES = {"pixart": "PixArt-style DiT (EDiT Table 1)", "sd3": "SD3.5-style MM-DiT (EDiT Table 2)",
                 "dit": "Class-conditional DiT (LiT)"}


def checks(families: dict[str, dict]) -> list[dict]:
    """The papers' claims, each with its verdict (``seeds.py``'s rule); nothing here changes a number."""
    out = []
    for family, rows in families.items():
        teacher = rows["teacher"]
        out.append(_check(f"{family} teacher adherence >= 80%", teacher["adherence"] - 0.8, noise(sd(teacher, "adherence")),
                          _pct(teacher), inclusive=True))
        main = FAMILIES[family].recipe  # the family's paper student: edit, mm_edit, lit
        if main in rows:
            out += _matches(main, rows[main], "the teacher's", teacher)
        for student, reference in FAMILIES[family].matches:
            if student in rows and reference in rows:
                out += _matches(student, rows[student], f"{reference}'s", rows[reference])
        for name in rows:  # what the demo's departures from the paper buy: NAME against NAME@paper
            if name.endswith(PAPER) and name[: -len(PAPER)] in rows:
                out += _departure(name[: -len(PAPER)], rows[name[: -len(PAPER)]], rows[name])
        for better, worse in FAMILIES[family].orderings:
            if better in rows and worse in rows:
                b, w = rows[better], rows[worse]
                out.append(_check(f"{better} better than {worse} (FID)", w["fid"] - b["fid"],
                                  noise(sd(b, "fid"), sd(w, "fid")), f"{_fid(b)} vs {_fid(w)}"))
                out.append(_check(f"{better} better than {worse} (adherence)", b["adherence"] - w["adherence"],
                                  noise(sd(b, "adherence"), sd(w, "adherence")), f"{_pct(b)} vs {_pct(w)}"))
    return out


def _departure(name: str, ours: dict, paper: dict) -> list[dict]:
    """lindit's claim that the demo's recipe beats the paper's for this student (FID and adherence)."""
    return [_check(f"{name}: the demo's recipe better than the paper's (FID)", paper["fid"] - ours["fid"],
                   noise(sd(ours, "fid"), sd(paper, "fid")), f"{_fid(ours)} vs {_fid(paper)}"),
            _check(f"{name}: the demo's recipe better than the paper's (adherence)",
                   ours["adherence"] - paper["adherence"], noise(sd(ours, "adherence"), sd(paper, "adherence")),
                   f"{_pct(ours)} vs {_pct(paper)}")]


def _matches(name: str, row: dict, of: str, ref: dict) -> list[dict]:
    """The acceptance's 'as good as': classifier-FID within 10% and adherence within 3 points."""
    ref_fid_sd = sd(ref, "fid")
    return [_check(f"{name} classifier-FID within 10% of {of}", 1.1 * ref["fid"] - row["fid"],
                   noise(sd(row, "fid"), None if ref_fid_sd is None else 1.1 * ref_fid_sd),
                   f"{_fid(row)} vs {_fid(ref)}", inclusive=True),
            _check(f"{name} adherence within 3 points of {of}", row["adherence"] - (ref["adherence"] - 0.03),
                   noise(sd(row, "adherence"), sd(ref, "adherence")), f"{_pct(row)} vs {_pct(ref)}", inclusive=True)]


def _check(claim: str, margin: float, noise_: float | None, detail: str, inclusive: bool = False) -> dict:
    found = verdict(margin, noise_, inclusive)
    return {"claim": claim, "verdict": found, "reproduced": found == "reproduced", "detail": detail,
            "margin": round(margin, 6), "noise": None if noise_ is None else round(noise_, 6)}


def _fid(row: dict) -> str:
    spread = sd(row, "fid")
    return f"{row['fid']:.1f}" if spread is None else f"{row['fid']:.1f} ± {spread:.1f}"


def _pct(row: dict) -> str:
    spread = sd(row, "adherence")
    return f"{row['adherence']:.1%}" if spread is None else f"{row['adherence']:.1%} ± {100 * spread:.1f}"


def write_json_report(out: Path, settings: dict, families: dict) -> dict:
    report = {"settings": settings, "families": families, "checks": checks(families)}
    write_json(out / "report.json", report)
    return report


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def family_table(family: str, rows: dict[str, dict], sizes: list[int]) -> list[str]:
    big = str(max(sizes))
    lines = [f"### {FAMILY_TITLES[family]}", "",
             f"| model | FID (classifier) ↓ | adherence ↑ | MSE to teacher ↓ | PSNR to teacher ↑ | latency {sizes[0]} px (ms) "
             f"| latency {big} px (ms) | train steps | train time (s) |", "|" + "---|" * 9]
    for name, r in rows.items():
        by_size = r.get("latency_s_by_size", {})
        lines.append(f"| {name} | {_fid(r)} | {_pct(r)} | {_cell(r, 'mse_to_teacher', '.4f')} "
                     f"| {_cell(r, 'psnr_to_teacher', '.1f')} | {1000 * r['latency_s']:.2f} "
                     f"| {_fmt(by_size.get(big) and 1000 * by_size[big], '.1f')} | {r['train_steps']} "
                     f"| {r['train_seconds']:.0f} |")
    unpaired = rows["teacher"].get("mse_unpaired")
    note = [f"Chance level of the MSE (teacher images of different prompts and noise): {unpaired:.4f}.", ""]
    return lines + [""] + (note if unpaired is not None else [])


def _cell(row: dict, key: str, spec: str) -> str:
    spread = sd(row, key)
    text = _fmt(row[key], spec)
    return text if spread is None else f"{text} ± {format(spread, spec)}"


def seed_table(rows: dict[str, dict]) -> list[str]:
    """FID / adherence of every model at each seed."""
    seeds = rows["teacher"]["seeds"]
    lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (1 + len(seeds)) + "|"]
    for name, r in rows.items():
        cells = [f"{v['fid']:.1f} / {v['adherence']:.1%}" for v in r["per_seed"]]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines + [""]


def _stage_words(stages: list[dict]) -> str:
    return "; ".join(
        f"stage \"{st['name']}\" ({'the replaced layers' if st['trainable'] == 'attention' else 'every weight'}, "
        f"{st['steps']} steps, lr {st['lr']:g}): " + " + ".join(f"{k} {v:g}" for k, v in st["loss"].items() if v)
        for st in stages)


def recipe_words(recipe: dict) -> str:
    """A family's stages (trainable set, steps, lr, non-zero loss weights) and each student's convert options."""
    convert = "; ".join(f"{m}: " + (", ".join(f"{k}={v}" for k, v in opts.items()) or "the method's defaults")
                        for m, opts in recipe["convert"].items())
    words = f"Recipe: {_stage_words(recipe['stages'])}. lindit.convert options: {convert}."
    if "paper" in recipe:
        words += (f" Rows NAME{PAPER} follow the paper's own recipe: {_stage_words(recipe['paper']['stages'])}; "
                  f"{recipe['paper']['caption_dropout']:.0%} of prompts dropped (the teacher's own).")
    return words


def _steps_words(s: dict) -> str:
    """'120 steps', or each family's: '720 steps (pixart), 240 steps (sd3, dit)'."""
    by_steps: dict[int, list[str]] = {}
    for family, steps in s["steps_by_family"].items():
        by_steps.setdefault(steps, []).append(family)
    if len(by_steps) == 1:
        return f"{next(iter(by_steps))} steps"
    return ", ".join(f"{steps} steps ({', '.join(families)})" for steps, families in by_steps.items())


def _budget_words(s: dict) -> str:
    words = [f"batch {s['batch_size']}", f"lr {s['lr']:g}", f"{s['schedule']} schedule"]
    if s["caption_dropout"] is not None:  # None: the teacher's own dropout
        words.append(f"{s['caption_dropout']:.0%} of prompts dropped")
    if s["ema"] is not None:
        words.append(f"EMA {s['ema']}")
    return ", ".join(words)


def _seed_words(s: dict) -> str:
    n = s.get("seeds", 1)
    if n == 1:
        return "one seed for all models"
    return (f"{n} seeds ({s['seed']}-{s['seed'] + n - 1}): each seed distils every student again (its own data "
            "draws, noise and order) and samples teacher and students with its own noise; every quality cell is "
            f"the mean ± the {SPREAD}, latency is the first seed's")


VERDICT_WORDS = ("A claim is *reproduced* when the means satisfy it by more than the noise, *not reproduced* when "
                 "they miss it by more than the noise, and *within noise* otherwise; the noise of comparing two "
                 "cells is sqrt(sd_a² + sd_b²), the spread of the difference of two single runs (sd: sample "
                 "standard deviation over the seeds). \"Margin\" is how far the means are on the claim's side of "
                 "its threshold (FID in its units, adherence in points).")
ONE_SEED_WORDS = ("One seed: no spread was measured, so each verdict compares the two values; differences of a few "
                  "FID or points are within what another seed moves (run `--seeds 3`).")


def claims_table(checks: list[dict], seeds: int) -> list[str]:
    lines = ["## Do the papers' claims reproduce here?", "", VERDICT_WORDS if seeds > 1 else ONE_SEED_WORDS, "",
             "| claim | verdict | measured | margin | noise |", "|---|---|---|---|---|"]
    for c in checks:
        word = f"**{c['verdict']}**" if c["verdict"] == "not reproduced" else c["verdict"]
        scale = 100 if "adherence" in c["claim"] else 1
        lines.append(f"| {c['claim']} | {word} | {c['detail']} | {scale * c['margin']:+.1f} "
                     f"| {_fmt(c['noise'] and scale * c['noise'], '.1f')} |")
    return lines + [""]


def _jobs_words(s: dict) -> str:
    if s.get("jobs", 1) == 1:
        return ""
    return f" ({s['jobs']} models distilled and sampled side by side, sharing the threads)"


def write_markdown(out: Path, report: dict, command: str) -> None:
    s = report["settings"]
    sizes = [int(k) for k in s["latency_sizes"]]
    lines = ["# lindit demo report", "",
             f"Made by `{command}` in {s['total_seconds']:.0f} s on {s['machine'].get('cpu', 'this CPU')} "
             f"({s['machine'].get('torch_threads', '?')} threads). Every student was distilled from its built-in teacher with "
             f"its family's recipe (under each table) for {_steps_words(s)} ({_budget_words(s)}); images: "
             f"{s['n_eval']} held-out "
             f"prompts per model, {s['sample_steps']} sampling steps, {_seed_words(s)}. FID is on the "
             "features of the world's shipped classifier against as many real world images (compare it only at "
             "equal image counts); adherence is the fraction of images whose detected shapes, colours and "
             "positions match the prompt; MSE and PSNR compare each student's images with the teacher's from the "
             f"same noise. Latency: one transformer forward, batch 1, median of repeats, this CPU, measured "
             f"alone. Train time: each student's distillation, wall clock{_jobs_words(s)}.", ""]
    for family, rows in report["families"].items():
        lines += family_table(family, rows, sizes)
        if family in s.get("recipes", {}):
            lines += [recipe_words(s["recipes"][family]), ""]
        if "per_seed" in rows["teacher"]:
            lines += ["FID / adherence per seed:", ""] + seed_table(rows)
        lines += [f"![samples]({family}_samples.png)", ""]
    lines += claims_table(report["checks"], s.get("seeds", 1))
    lines += ["![latency](latency.png)", ""]
    write_text(out / "report.md", "\n".join(lines))


def sample_grid(path: Path, rows: dict[str, torch.Tensor], titles: list[str], columns: int = 8) -> None:
    """One row per model (teacher first), the same prompts and noise in each column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(columns, len(titles))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.4 * n + 1.2, 1.5 * len(rows) + 0.6), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(((images[c] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(_wrap(titles[c]), fontsize=5)
    fig.tight_layout()
    _save_figure(fig, path)


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = str(text).split(), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def latency_plot(path: Path, families: dict[str, dict]) -> None:
    """Forward latency against image size, one panel per family, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.4), squeeze=False)
    for ax, (family, rows) in zip(axes[0], families.items()):
        for name, r in rows.items():
            sizes = sorted(int(k) for k in r["latency_s_by_size"])
            ax.plot(sizes, [1000 * r["latency_s_by_size"][str(s)] for s in sizes], marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="image size (px)", ylabel="forward (ms)", title=family)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
