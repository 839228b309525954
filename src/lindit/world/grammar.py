"""The vocabulary of the shapes world and the grammar of its captions.

A scene is one or more ``WorldObject(shape, colour, position)`` in distinct cells of a 3x3 layout. Its
caption names every object in a fixed phrase, joined by "and":

    "a red circle at the top left and a blue square in the center"

The grammar is small and closed on purpose: the built-in tokenizer, the detector and the evaluation prompts
all derive from the constants here, so adding a colour or a shape is a one-line change in one place.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "POSITIONS",
    "PHRASES",
    "SHAPES",
    "WorldObject",
    "caption",
    "cell_of",
    "describe",
    "parse_caption",
    "position_at",
    "vocabulary",
]

SHAPES = ("circle", "square", "triangle")

# Saturated colours far apart in RGB (pairwise cosine of their directions from the background <= 0.78,
# against 0.71 for ideal primaries and secondaries), so both a rendered pixel and a roughly right
# generated pixel map to one name without ambiguity.
COLOURS = {
    "red": (0.92, 0.12, 0.12),
    "green": (0.12, 0.82, 0.12),
    "blue": (0.15, 0.15, 0.98),
    "yellow": (0.92, 0.88, 0.12),
    "magenta": (0.88, 0.12, 0.90),
    "cyan": (0.12, 0.85, 0.90),
}
BACKGROUND = (0.08, 0.08, 0.10)

# Row-major over the 3x3 layout: POSITIONS[3 * row + col].
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
PHRASES = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
_POSITION_OF_PHRASE = {phrase: position for position, phrase in PHRASES.items()}


class WorldObject(NamedTuple):
    """One object of a scene: what it is, its colour and which of the 9 cells it is in."""

    shape: str
    colour: str
    position: str


def cell_of(position: str) -> tuple[int, int]:
    """(row, col) in 0..2 of a position name."""
    return divmod(POSITIONS.index(position), 3)


def position_at(row: int, col: int) -> str:
    """Position name of cell (row, col), row and col in 0..2."""
    return POSITIONS[3 * row + col]


def describe(obj: WorldObject) -> str:
    """The caption phrase of one object, e.g. "a red circle at the top left"."""
    return f"a {obj.colour} {obj.shape} {PHRASES[obj.position]}"


def caption(objects: list[WorldObject]) -> str:
    """The caption of a scene: its objects' phrases joined by "and", in the given order."""
    return " and ".join(describe(obj) for obj in objects)


def _parse_object(part: str) -> WorldObject:
    words = part.split()
    phrase = " ".join(words[3:])
    if len(words) < 4 or words[0] != "a" or phrase not in _POSITION_OF_PHRASE:
        raise ValueError(f"not an object phrase of the shapes world: {part!r}")
    if words[1] not in COLOURS or words[2] not in SHAPES:
        raise ValueError(f"unknown colour or shape in {part!r}")
    return WorldObject(words[2], words[1], _POSITION_OF_PHRASE[phrase])


def parse_caption(text: str) -> list[WorldObject]:
    """Inverse of ``caption``: the objects a caption of the grammar names. Raises ValueError otherwise."""
    return [_parse_object(part) for part in text.lower().strip().split(" and ")]


def vocabulary() -> list[str]:
    """Every word a caption can contain, sorted (the built-in tokenizer's vocabulary after its specials)."""
    phrases = [*PHRASES.values(), *COLOURS, *SHAPES, "a", "and"]
    return sorted({word for phrase in phrases for word in phrase.split()})
