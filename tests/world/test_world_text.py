import json

import pytest
import torch

from lindit.world.grammar import vocabulary
from lindit.world.text import ASSET, PAD, UNK, SEED, TextEncoder, Tokenizer, build_text_encoder, main, write_assets

CAPTION = "a red circle at the top left and a blue square at the bottom right"


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder.builtin()


def test_tokenizer_maps_words_pads_and_masks():
    tokenizer = Tokenizer(max_length=16)
    ids, mask = tokenizer([CAPTION, "A RED circle!", ""])
    assert ids.shape == mask.shape == (3, 16) and ids.dtype == mask.dtype == torch.long
    assert mask.sum(1).tolist() == [15, 3, 0]
    words = CAPTION.split()
    assert [tokenizer.vocab[i] for i in ids[0, :15]] == words
    assert ids[1, :3].tolist() == ids[0, :3].tolist()  # case and punctuation do not matter
    assert (ids[mask == 0] == PAD).all()


def test_tokenizer_maps_unknown_words_to_unk_and_truncates():
    tokenizer = Tokenizer(max_length=4)
    ids, mask = tokenizer(["a purple hexagon at the top", "ünïcode 123 ???"])
    assert ids[0].tolist() == [tokenizer.ids["a"], UNK, UNK, tokenizer.ids["at"]] and mask[0].sum() == 4
    assert mask[1].sum() == 1 and ids[1, 0] == UNK  # one word of letters, unknown; digits are no word


def test_shipped_weights_equal_regenerated_ones():
    shipped, fresh = TextEncoder.builtin(), build_text_encoder(SEED)
    assert shipped.state_dict().keys() == fresh.state_dict().keys()
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(shipped.state_dict()[name], tensor), name
    record = json.loads(ASSET.with_suffix(".json").read_text())
    assert record["seed"] == SEED and record["vocab"] == vocabulary()
    assert ASSET.stat().st_size < 1_000_000


def test_other_seeds_give_other_weights():
    assert not torch.equal(build_text_encoder(SEED + 1).embed.weight, build_text_encoder(SEED).embed.weight)


def test_outputs_have_documented_shapes_and_are_frozen(encoder):
    embeds, mask, pooled = encoder.encode([CAPTION, "a green triangle in the center", ""])
    assert embeds.shape == (3, 16, 64) and mask.shape == (3, 16) and pooled.shape == (3, 64)
    assert (embeds[mask == 0] == 0).all() and torch.isfinite(embeds).all() and torch.isfinite(pooled).all()
    assert (embeds[mask == 1].norm(dim=-1) > 1).all()
    assert not any(p.requires_grad for p in encoder.parameters())


def test_identical_captions_identical_embeddings_whatever_the_batch(encoder):
    first, _, pooled_first = encoder.encode([CAPTION, "a red circle on the left", CAPTION])
    assert torch.equal(first[0], first[2]) and torch.equal(pooled_first[0], pooled_first[2])
    # Across batches of other sizes only float rounding of the batched matmuls may differ.
    second, _, pooled_second = encoder.encode(["a blue circle in the center", "x", CAPTION, "y"])
    assert torch.allclose(first[0], second[2], atol=1e-5) and torch.allclose(pooled_first[0], pooled_second[2], atol=1e-5)


def test_different_captions_different_embeddings_including_word_order(encoder):
    captions = [
        CAPTION,
        "a blue circle at the top left and a red square at the bottom right",  # colours swapped
        "a red square at the top left and a blue circle at the bottom right",  # shapes swapped
        "a red circle at the bottom right and a blue square at the top left",  # positions swapped
        "a red circle at the top left",
    ]
    embeds, _, pooled = encoder.encode(captions)
    for i in range(len(captions)):
        for j in range(i):
            assert (pooled[i] - pooled[j]).norm() > 1e-2 * pooled[i].norm(), (captions[i], captions[j])
            assert (embeds[i] - embeds[j]).norm() > 1e-2 * embeds[i].norm()


def test_write_assets_round_trip_and_vocabulary_check(tmp_path):
    main(["--write-assets", "--out", str(tmp_path / "enc.safetensors"), "--seed", "5"])
    loaded = TextEncoder.builtin(tmp_path / "enc.safetensors")
    assert torch.equal(loaded.embed.weight, build_text_encoder(5).embed.weight)
    path = write_assets(tmp_path / "old.safetensors")
    record = json.loads(path.with_suffix(".json").read_text())
    record["vocab"] = record["vocab"][:-1]
    path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="vocabulary"):
        TextEncoder.builtin(path)
