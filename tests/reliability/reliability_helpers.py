"""Helpers of the reliability tests."""

from pathlib import Path

import yaml
from training_helpers import tiny_dict


def write_recipe(path: Path, **changes) -> Path:
    """A tiny pixart distillation recipe (tests/training) as YAML, with top-level sections replaced."""
    data = tiny_dict("pixart", "edit", steps=4)
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def billion_laughs(levels: int) -> str:
    """A few hundred bytes of YAML whose aliases expand to 10**levels values."""
    names = "abcdefghij"
    lines = ["a: &a [x,x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip(names, names[1:levels]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    return "\n".join(lines) + "\n"
