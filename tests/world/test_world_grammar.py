import pytest

from lindit.world.grammar import (
    COLOURS,
    PHRASES,
    POSITIONS,
    SHAPES,
    WorldObject,
    caption,
    cell_of,
    parse_caption,
    position_at,
    vocabulary,
)
from lindit.world.shapes import ShapesDataset


def test_layout_is_3x3_row_major():
    assert len(POSITIONS) == 9 and set(PHRASES) == set(POSITIONS)
    assert cell_of("top left") == (0, 0) and cell_of("right") == (1, 2) and cell_of("bottom") == (2, 1)
    assert all(position_at(*cell_of(position)) == position for position in POSITIONS)


def test_caption_reads_naturally():
    objects = [WorldObject("circle", "red", "top left"), WorldObject("square", "blue", "center")]
    assert caption(objects) == "a red circle at the top left and a blue square in the center"
    assert caption([WorldObject("triangle", "green", "left")]) == "a green triangle on the left"


def test_parse_inverts_caption_for_every_object_and_dataset_samples():
    every = [WorldObject(s, c, p) for s in SHAPES for c in COLOURS for p in POSITIONS]
    assert all(parse_caption(caption([obj])) == [obj] for obj in every)
    data = ShapesDataset(200, seed=3, max_objects=3)
    assert all(parse_caption(data.caption(i)) == data.label(i) for i in range(len(data)))


@pytest.mark.parametrize("text", ["a red circle", "a purple circle at the top", "two red circles on the left", ""])
def test_parse_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError):
        parse_caption(text)


def test_vocabulary_covers_every_caption_word_and_nothing_else():
    words = {w for i in range(300) for w in ShapesDataset(300, seed=1, max_objects=3).caption(i).split()}
    assert words <= set(vocabulary())
    assert set(vocabulary()) == {"a", "and", "at", "the", "on", "in", *SHAPES, *COLOURS,
                                 "top", "bottom", "left", "right", "center"}  # fmt: skip
