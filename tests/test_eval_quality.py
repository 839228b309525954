"""``lindit eval`` and ``lindit.eval.quality``: inputs, generation, FID, CLIP score, world metrics, the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from lindit.cli import main
from lindit.eval import quality
from lindit.eval.inception import InceptionFeatures
from lindit.world.grammar import BACKGROUND
from lindit.world.shapes import ShapesClassDataset, ShapesDataset
from lindit.world.teachers import build_teacher, builtin_pipeline, load_builtin_teacher, settings_of

N = 16  # images per set: enough for the checks below, small enough to stay fast


class StandInFeatures(nn.Module):
    """A fixed random feature extractor for FID: images (B, 3, H, W) in [0, 1] -> (B, 24)."""

    num_features = 24

    def __init__(self):
        super().__init__()
        self.register_buffer("proj", torch.randn(3 * 8 * 8, 24, generator=torch.Generator().manual_seed(0)))

    def forward(self, images):
        return F.adaptive_avg_pool2d(images, 8).flatten(1) @ self.proj  # (B, 24)


def world_set(n=N, seed=0, size=32):
    """(images (n, 3, S, S) in [-1, 1], captions) of the shapes world."""
    data = ShapesDataset(n, seed=seed, size=size)
    return torch.stack([data[i][0] for i in range(n)]), [data.caption(i) for i in range(n)]


def to_pil(images):
    return [Image.fromarray(((x + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()) for x in images]


def save_pngs(images, folder):
    folder.mkdir(parents=True)
    for i, image in enumerate(to_pil(images)):
        image.save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Throwaway untrained built-in teachers saved as diffusers folders: name -> folder. (Training even
    two steps renders the teacher's whole dataset; untrained weights test the same code.)"""
    root = tmp_path_factory.mktemp("teachers")
    for name in ("pixart", "dit"):
        build_teacher(settings_of(name)).save_pretrained(root / name)
    return {name: root / name for name in ("pixart", "dit")}


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised FID Inception-v3 saved as safetensors (the real weights cannot be downloaded)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "inception.safetensors"
    save_file(InceptionFeatures().state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny random CLIPModel + CLIPProcessor with an offline character-level BPE tokenizer.

    The final layer norms add a shared bias, so image and text features share a direction and the scores
    are positive (torchmetrics clamps a negative mean to 0), but still depend on which prompt meets which image.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from lindit.world.grammar import vocabulary

    folder = tmp_path_factory.mktemp("clip")
    chars = sorted(set("".join(vocabulary())))
    tokens = [c for ch in chars for c in (ch, ch + "</w>")] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                              tokenizer)
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokens), max_position_embeddings=128,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id, **tower),
                        vision_config=dict(image_size=32, patch_size=8, **tower), projection_dim=8)
    torch.manual_seed(0)
    model = CLIPModel(config)
    with torch.no_grad():
        shared = torch.randn(16)
        for norm in (model.vision_model.post_layernorm, model.text_model.final_layer_norm):
            norm.bias.copy_(0.7 * shared)
        model.text_projection.weight.copy_(model.visual_projection.weight)
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder / "model"


# ---------------------------------------------------------------- inputs
def test_prompts_skip_blank_lines_and_comments_and_an_empty_file_is_named(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# header\n\na red circle\n  a blue square at the top  \n\n")
    assert quality.read_prompts(path) == ["a red circle", "a blue square at the top"]
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match=r"p\.txt is empty"):
        quality.read_prompts(path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        quality.read_prompts(tmp_path / "missing.txt")


def test_class_labels_from_a_list_or_a_file_and_bad_ones_are_named(tmp_path):
    assert quality.parse_class_labels("0,3, 17") == [0, 3, 17]
    (tmp_path / "labels.txt").write_text("# ids\n4\n5\n")
    assert quality.parse_class_labels(str(tmp_path / "labels.txt")) == [4, 5]
    with pytest.raises(FileNotFoundError, match="'cat,dog'"):
        quality.parse_class_labels("cat,dog")
    with pytest.raises(ValueError, match="class label -1 is out of range"):
        quality.parse_class_labels("2,-1")
    with pytest.raises(ValueError, match="class label 18 is out of range; valid: 0-17"):
        quality.check_labels([3, 18], 18)


def test_load_images_reads_png_and_jpg_sorted_and_names_a_missing_or_empty_folder(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "b.jpg")
    Image.new("L", (8, 6), 7).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = quality.as_uint8(quality.load_images(tmp_path))
    assert [tuple(x.shape) for x in images] == [(3, 6, 8), (3, 8, 8)]  # a.png first, greyscale made RGB
    with pytest.raises(FileNotFoundError, match="nowhere"):
        quality.load_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty has no images"):
        quality.load_images(tmp_path / "empty")


def test_as_uint8_accepts_pil_uint8_and_world_floats_alike():
    images, _ = world_set(2)
    as_float, as_pil = quality.as_uint8(images), quality.as_uint8(to_pil(images))
    assert all(torch.equal(a, b) for a, b in zip(as_float, as_pil))
    with pytest.raises(ValueError, match=r"\(3, H, W\), got shape \(1, 4, 4\)"):
        quality.as_uint8([torch.zeros(1, 4, 4, dtype=torch.uint8)])


# ---------------------------------------------------------------- FID
def test_fid_is_zero_for_a_set_against_itself_and_grows_with_corruption():
    real, _ = world_set()
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    fid = lambda fake: quality.frechet_distance(real, fake, StandInFeatures(), batch_size=5)  # noqa: E731
    same, slightly, badly = fid(real), fid((real + 0.2 * noise).clamp(-1, 1)), fid((real + noise).clamp(-1, 1))
    assert abs(same) < 1e-3 * slightly and slightly < badly
    # Sets may mix sizes (each batch holds one size); uint8 and PIL inputs give the same distance.
    mixed = list(quality.as_uint8(real[:8])) + list(quality.as_uint8(world_set(8, size=48)[0]))
    assert torch.isfinite(torch.tensor(fid(mixed)))
    assert fid(to_pil(real)) == pytest.approx(same, abs=1e-3)


def test_world_and_inception_fids_share_one_frechet_distance():
    """``frechet_distance_of_batches`` (float batches in [0, 1]) is what both ``frechet_distance``s call."""
    from lindit.world import fid as world_fid

    real, _ = world_set()
    fake = (real + 0.3 * torch.randn(real.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    unit = lambda images: [torch.stack(quality.as_uint8(images)).float() / 255]  # noqa: E731
    assert quality.frechet_distance_of_batches(unit(real), unit(fake), StandInFeatures()) == pytest.approx(
        quality.frechet_distance(real, fake, StandInFeatures(), batch_size=5), rel=1e-4)
    world = world_fid.WorldFeatures()
    assert world_fid.frechet_distance(real, fake, batch_size=7) == pytest.approx(
        quality.frechet_distance_of_batches([(real + 1) / 2], [(fake + 1) / 2], world), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 generated images, got 1"):
        quality.frechet_distance_of_batches(unit(real), unit(fake[:1]), StandInFeatures())


def test_inception_features_roundtrip_through_safetensors_and_pth(tmp_path, inception_file):
    from safetensors.torch import load_file

    model = InceptionFeatures.from_file(inception_file)
    source = InceptionFeatures()
    source.load_state_dict(load_file(str(inception_file)))
    torch.save(source.state_dict(), tmp_path / "inception.pth")
    images = torch.rand(2, 3, 40, 56)
    out = model(images)
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    assert torch.equal(out, source(images))
    assert torch.equal(out, InceptionFeatures.from_file(tmp_path / "inception.pth")(images))
    model.train()
    assert not model.training  # BatchNorm keeps its running statistics


def test_inception_weights_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.safetensors does not exist"):
        InceptionFeatures.from_file(tmp_path / "absent.safetensors")
    (tmp_path / "w.bin").write_bytes(b"0")
    with pytest.raises(ValueError, match=r"unknown file type '\.bin'; valid: \.safetensors, \.pth, \.pt"):
        InceptionFeatures.from_file(tmp_path / "w.bin")
    save_file({"fc.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors is not an FID Inception-v3 weights file"):
        InceptionFeatures.from_file(tmp_path / "other.safetensors")


# ---------------------------------------------------------------- CLIP score
def test_clip_score_pairs_each_image_with_its_own_prompt(clip_folder):
    model, processor = quality.load_clip(clip_folder)
    captions = world_set(8)[1]
    # Eight distinct solid colours: a random tiny CLIP tells them apart better than it tells world images apart.
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * 3)  # (8, 3): the corners of the RGB cube
    images = corners.view(8, 3, 1, 1).expand(8, 3, 32, 32)

    @torch.no_grad()
    def by_hand(prompts):  # torchmetrics' definition: max(mean of 100 * cos(image_i, prompt_i), 0)
        pixels = processor(images=to_pil(images), return_tensors="pt")["pixel_values"]
        text = processor(text=prompts, return_tensors="pt", padding=True)
        image_f = model.get_image_features(pixel_values=pixels).pooler_output
        text_f = model.get_text_features(**text).pooler_output
        return max(float(100 * F.cosine_similarity(image_f, text_f).mean()), 0.0)

    score = quality.clip_score(to_pil(images), captions, clip_folder, batch_size=3)
    shuffled = captions[3:] + captions[:3]
    assert 0 < score <= 100 and score == pytest.approx(by_hand(captions), abs=1e-3)
    assert quality.clip_score(images, shuffled, (model, processor)) == pytest.approx(by_hand(shuffled), abs=1e-3)
    assert abs(by_hand(shuffled) - score) > 0.1  # the pairing matters, far beyond the tolerance above


def test_clip_model_folder_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope has no config.json"):
        quality.load_clip(tmp_path / "nope")


# ---------------------------------------------------------------- world metrics and evaluate
def test_real_world_images_as_generated_images_score_full_adherence():
    images, captions = world_set()
    report = quality.evaluate(to_pil(images), captions, reference=world_set(seed=1)[0], world=True)
    assert report["metrics"]["adherence"] == pytest.approx(1.0, abs=0.07)  # PNG rounding may cost one image
    shuffled = quality.evaluate(images, captions[1:] + captions[:1], world=True)
    assert shuffled["metrics"]["adherence"] < 0.3
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noisy = quality.evaluate(noise, captions, reference=world_set(seed=1)[0], world=True)
    assert report["metrics"]["world_fid"] < noisy["metrics"]["world_fid"]


def test_class_adherence_needs_one_object_of_the_class_shape_and_colour():
    data = ShapesClassDataset(N, seed=0)
    images, ids = torch.stack([data[i][0] for i in range(N)]), [data[i][1] for i in range(N)]
    assert quality.class_adherence(images, ids) == pytest.approx(1.0, abs=0.07)
    other_colour = [i - i % 6 + (i + 1) % 6 for i in ids]  # same shape, the next colour
    assert quality.class_adherence(images, other_colour) < 0.1
    foreground = ((images - (torch.tensor(BACKGROUND).view(1, 3, 1, 1) * 2 - 1)).abs().amax(1, keepdim=True) > 0.1)
    two_objects = torch.where(foreground, images, images.roll(1, 0))  # each object over another image
    assert quality.class_adherence(two_objects, ids) < 0.5
    assert quality.evaluate(images, ids, world=True)["metrics"]["adherence"] == quality.class_adherence(images, ids)


def test_evaluate_reports_every_metric_as_computed_or_skipped_with_the_reason(clip_folder):
    images, captions = world_set(8)
    report = quality.evaluate(images, captions)
    assert report["metrics"] == {} and set(report["skipped"]) == set(quality.METRICS)
    assert "--reference" in report["skipped"]["fid"] and "--clip-model" in report["skipped"]["clip_score"]
    report = quality.evaluate(images, captions, reference=images, feature=StandInFeatures(),
                              clip=clip_folder, world=True)
    assert set(report["metrics"]) == set(quality.METRICS) and report["skipped"] == {}
    assert report["metrics"]["fid"] == pytest.approx(0, abs=1e-3)
    # Batch by batch (as `lindit eval` measures while it generates) is the same as all at once.
    noisy = (images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    whole, batched = (quality.evaluate(noisy, captions, reference=images, feature=StandInFeatures(), world=True,
                                       batch_size=size)["metrics"] for size in (8, 3))
    assert batched == pytest.approx(whole, rel=1e-4) and whole["fid"] > 1
    one = quality.evaluate(images[:1], captions[:1], reference=images, feature=StandInFeatures())
    assert "at least 2 generated images, got 1" in one["skipped"]["fid"]
    cats = quality.evaluate(images[:2], ["a cat", "a dog"], world=True, clip=clip_folder)
    assert "prompt 'a cat' is not a caption of the shapes world" in cats["skipped"]["adherence"]
    labels = quality.evaluate(images[:2], [0, 1], clip=clip_folder)
    assert "class-conditional" in labels["skipped"]["clip_score"]
    with pytest.raises(ValueError, match="8 images but 7"):
        quality.evaluate(images, captions[:7])


# ---------------------------------------------------------------- generation
def test_generate_is_seeded_and_batched(teachers):
    pipe = builtin_pipeline("pixart", transformer=load_builtin_teacher("pixart", path=teachers["pixart"]))
    prompts = ["a red circle at the top left", "a blue square", "a green triangle at the bottom"]
    run = lambda seed: quality.generate(pipe, prompts, 32, 32, steps=2, seed=seed, batch_size=2)  # noqa: E731
    first, again, other = run(0), run(0), run(1)
    assert len(first) == 3 and first[0].size == (32, 32)
    assert all(torch.equal(a, b) for a, b in zip(quality.as_uint8(first), quality.as_uint8(again)))
    assert not torch.equal(quality.as_uint8(first)[0], quality.as_uint8(other)[0])
    assert quality.is_world_pipeline(pipe) and quality.trained_size(pipe) == 32
    with pytest.raises(ValueError, match="height 30 is not a positive multiple of 8"):
        quality.generate(pipe, prompts, 30, 32, steps=1)


# ---------------------------------------------------------------- the command
def _eval(*argv):
    return main(["eval", *map(str, argv)])


def test_cli_writes_images_and_every_metric(tmp_path, teachers, inception_file, clip_folder):
    images, captions = world_set(4)
    (tmp_path / "prompts.txt").write_text("# world captions\n" + "\n".join(captions) + "\n")
    reference = save_pngs(world_set(4, seed=1)[0], tmp_path / "ref")
    out = tmp_path / "out"
    assert _eval("--model", teachers["pixart"], "--base", "builtin:pixart", "--prompts", tmp_path / "prompts.txt",
                 "--reference", reference, "--out", out, "--inception-weights", inception_file,
                 "--clip-model", clip_folder, "--steps", 2, "--batch-size", 3, "--seed", 5) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["metrics"]) == set(quality.METRICS) and record["skipped"] == {}
    assert all(isinstance(v, float) for v in record["metrics"].values())
    assert record["settings"] == {"height": 32, "width": 32, "steps": 2, "guidance": 4.5, "seed": 5,
                                  "batch_size": 3, "dtype": "float32", "device": "cpu"}
    assert record["inputs"]["images"] == 4 and record["inputs"]["reference_images"] == 4
    assert record["command"].startswith("lindit eval --model ")
    written = sorted((out / "images").iterdir())
    assert len(written) == 4 and Image.open(written[1]).text["prompt"] == captions[1]


def test_cli_dit_uses_class_labels_and_skips_what_it_cannot_measure(tmp_path, teachers):
    out = tmp_path / "out"
    assert _eval("--model", teachers["dit"], "--base", "builtin:dit", "--class-labels", "0,5,17",
                 "--out", out, "--steps", 2) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["metrics"]) == {"adherence"}
    assert set(record["skipped"]) == {"fid", "clip_score", "world_fid"}
    assert len(list((out / "images").iterdir())) == 3


def test_cli_errors_name_the_bad_value(tmp_path, teachers, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    pixart = ("--model", teachers["pixart"], "--base", "builtin:pixart")
    cases = [
        ((*pixart, "--prompts", tmp_path / "none.txt", "--out", tmp_path / "o"), "none.txt does not exist"),
        ((*pixart, "--out", tmp_path / "o"), "pass either --prompts FILE"),
        ((*pixart, "--prompts", prompts, "--reference", tmp_path / "noref", "--out", tmp_path / "o"),
         "noref does not exist"),
        ((*pixart, "--prompts", prompts, "--inception-weights", tmp_path / "w.safetensors", "--out", tmp_path / "o"),
         "w.safetensors does not exist"),
        ((*pixart, "--class-labels", "1,2", "--out", tmp_path / "o"), "is not class-conditional: pass --prompts"),
        (("--model", teachers["dit"], "--base", "builtin:dit", "--prompts", prompts, "--out", tmp_path / "o"),
         "is class-conditional: pass --class-labels"),
        (("--model", teachers["dit"], "--base", "builtin:dit", "--class-labels", "3,40", "--out", tmp_path / "o"),
         "class label 40 is out of range; valid: 0-17"),
        ((*pixart, "--prompts", prompts, "--height", 30, "--out", tmp_path / "o"), "height 30"),
        ((*pixart, "--prompts", prompts, "--out", tmp_path), "already exists"),
    ]
    for argv, message in cases:
        assert _eval(*argv) == 2, message
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written
