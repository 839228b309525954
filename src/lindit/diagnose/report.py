"""The diagnosis as markdown: the model's output error, then per converted layer and per block."""

from __future__ import annotations

OUTPUT_WORDS = ("Output errors are relative squared errors, ||student - teacher||^2 / ||teacher||^2 (0: the "
                "teacher's; 1: as far off as predicting zero), of the prediction with the prompt, with the null "
                "prompt, and of the guidance direction (prompt - null), mean over probe batches.")
LAYER_WORDS = ("Layer errors: each converted layer fed its teacher layer's input (teacher forcing), its output "
               "after the output projection against the teacher layer's, image and prompt tokens, with prompt "
               "and null prompt.")
BLOCK_WORDS = ("Hybrid blocks (before the output projection, relative to the teacher's output of those rows): "
               "O_s - O_t = eta_s (A1_s - A1_t) + (1 - eta_s) (A2_s - A2_t) + (eta_s - eta_t) (A1_t - A2_t); "
               "for image queries A1 is the image-image block and A2 image-prompt, for prompt queries A1 is "
               "prompt-image and A2 prompt-prompt; eta is the weight of A1 (for the teacher, its softmax mass on "
               "image keys), mean over queries.")


def markdown(report: dict, command: str) -> str:
    plan = report["plan"]
    options = ", ".join(f"{k}={v}" for k, v in plan["options"].items()) or "none"
    lines = ["# lindit diagnose", "",
             f"Made by `{command}`: method `{plan['method']}` (options: {options}; inherit: "
             f"{plan['inherit'] or 'none'}) on blocks {plan['layers']}, {report['probes']} probe samples, each with "
             "its prompt and with the null prompt.", "", OUTPUT_WORDS, ""]
    sides = [s for s in ("fresh", "distilled") if s in report]
    lines += _model_table(report, sides) + [LAYER_WORDS, ""] + _layer_table(report, sides)
    lines += _alone_table(report, sides)
    blocks = [(s, report[s]) for s in sides if any("blocks" in v for v in report[s]["layers"].values())]
    if blocks:
        lines += [BLOCK_WORDS, ""]
        for side, data in blocks:
            lines += _block_table(side, data)
    return "\n".join(lines)


def _model_table(report: dict, sides: list[str]) -> list[str]:
    lines = ["| student | prompt | null prompt | guidance direction |", "|---|---|---|---|"]
    for side in sides:
        m = report[side]["model"]
        lines.append(f"| {_side_name(report, side)} | {m['prompt']:.3f} | {m['null']:.3f} | {m['guidance']:.3f} |")
    return lines + [""]


def _side_name(report: dict, side: str) -> str:
    return f"distilled ({report['student']})" if side == "distilled" else "freshly converted"


def _layer_table(report: dict, sides: list[str]) -> list[str]:
    head = " | ".join(f"{side} image | {side} prompt" for side in sides)
    lines = [f"| layer | {head} |", "|---" * (1 + 2 * len(sides)) + "|"]
    for name in report[sides[0]]["layers"]:
        cells = []
        for side in sides:
            row = report[side]["layers"][name]
            cells += [f"{row['image']:.3f}", _fmt(row.get("prompt"))]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines + [""]


def _alone_table(report: dict, sides: list[str]) -> list[str]:
    """Per block: the teacher with only this block converted (fresh / distilled weights), and the distilled
    student with this block given back its softmax attention."""
    columns = [(side, "alone") for side in sides]
    if "distilled" in sides and report["distilled"].get("keep_softmax"):
        columns.append(("distilled", "keep_softmax"))
    titles = {("fresh", "alone"): "only this block converted (fresh)",
              ("distilled", "alone"): "only this block converted (distilled weights)",
              ("distilled", "keep_softmax"): "distilled, this block kept in softmax"}
    lines = ["Per block, the guidance-direction error of the whole model (and the prompted prediction's), for "
             + "; ".join(titles[c] for c in columns) + ":", "",
             "| block | " + " | ".join(titles[c] for c in columns) + " |", "|---" * (1 + len(columns)) + "|"]
    for block in report[sides[0]]["alone"]:
        cells = []
        for side, kind in columns:
            e = report[side][kind][block]
            cells.append(f"{e['guidance']:.3f} ({e['prompt']:.3f})")
        lines.append(f"| {block} | {' | '.join(cells)} |")
    return lines + [""]


def _block_table(side: str, data: dict) -> list[str]:
    lines = [f"{side.capitalize()}:", "",
             "| layer | queries | total | A1 term | A2 term | eta term | eta student | eta teacher | eta teacher by head |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in data["layers"].items():
        for rows, b in row.get("blocks", {}).items():
            heads = ", ".join(f"{e:.2f}" for e in b["eta_teacher_by_head"])
            lines.append(f"| {name} | {rows} | {b['total']:.3f} | {b['first']:.3f} | {b['second']:.3f} "
                         f"| {b['eta']:.3f} | {b['eta_student']:.2f} | {b['eta_teacher']:.2f} | {heads} |")
    return lines + [""]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
