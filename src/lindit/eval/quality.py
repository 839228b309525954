"""Quality of a model's images: Inception FID, CLIP score, and the shapes world's own metrics.

    images = generate(pipe, prompts, height=512, width=512, seed=0)
    report = evaluate(images, prompts, reference="ref/", feature=InceptionFeatures.from_file(weights),
                      clip="clip-vit-large-patch14/")
    report["metrics"]   # {"fid": ..., "clip_score": ...}
    report["skipped"]   # {"adherence": "not a shapes-world model", "world_fid": ...}

Every metric of ``METRICS`` is either computed or skipped with the reason, so a report always says what it
measured. ``Evaluation`` accumulates the metrics batch by batch (torchmetrics' metrics are running sums), so
``lindit eval`` never holds more than one batch of generated images; ``evaluate`` runs it on a list.

Images are PIL images or uint8 tensors (3, H, W) in [0, 255], or float tensors in [-1, 1] (the world's
range, as ``lindit.world.detect.to_unit``); sets may mix sizes. Conditions are prompts (str) or, for
class-conditional models (DiT), class ids (int).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["METRICS", "Evaluation", "as_uint8", "class_adherence", "clip_score", "evaluate", "fid_metric_on",
           "frechet_distance", "frechet_distance_of_batches", "generate", "generate_batches", "image_files",
           "is_world_pipeline", "load_clip", "load_images", "parse_class_labels", "read_prompts"]

METRICS = ("fid", "clip_score", "adherence", "world_fid")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------- inputs
def _read_lines(path: str | Path, what: str) -> list[str]:
    """Non-blank lines of a text file, without ``#`` comment lines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{what} file {path} is empty (blank lines and # comments are ignored)")
    return lines


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line of ``path``; blank lines and ``#`` comments ignored."""
    return _read_lines(path, "prompts")


def parse_class_labels(spec: str) -> list[int]:
    """Class ids from a file (one per line, ``#`` comments allowed) or a comma-separated list such as ``0,3,17``."""
    if Path(spec).is_file():
        items = _read_lines(spec, "class labels")
    elif all(part.strip().lstrip("-").isdigit() for part in spec.split(",")):
        items = spec.split(",")
    else:
        raise FileNotFoundError(f"class labels {spec!r}: no such file, and not a comma-separated list of ints "
                                "such as 0,3,17")
    bad = [item for item in items if not item.strip().lstrip("-").isdigit()]
    if bad:
        raise ValueError(f"class labels {spec}: {bad[0]!r} is not an int")
    return check_labels([int(item) for item in items], None)


def check_labels(labels: list[int], num_classes: int | None) -> list[int]:
    """``labels`` if each lies in [0, num_classes) (or is >= 0 when ``num_classes`` is None)."""
    high = f"{num_classes - 1}" if num_classes is not None else "..."
    for label in labels:
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise ValueError(f"class label {label} is out of range; valid: 0-{high}")
    return labels


def image_files(folder: str | Path, what: str = "reference") -> list[Path]:
    """The PNG / JPG files directly inside ``folder``, sorted by name; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{what} folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_images(source, what: str = "reference") -> list:
    """The images of a folder (see ``image_files``) or a list of image files, as RGB PIL images."""
    from PIL import Image

    files = image_files(source, what) if isinstance(source, (str, Path)) else source
    return [Image.open(p).convert("RGB") for p in files]


def as_uint8(images) -> list[torch.Tensor]:
    """PIL images, or tensors (N, 3, H, W) / lists of (3, H, W), uint8 or float in [-1, 1] -> uint8 (3, H, W)."""
    from ..world.detect import to_unit

    out = []
    for image in images:
        if not torch.is_tensor(image):  # PIL: (H, W, 3) uint8
            image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        elif image.dtype != torch.uint8:
            image = (to_unit(image) * 255).round().to(torch.uint8)
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected RGB images (3, H, W), got shape {tuple(image.shape)}")
        out.append(image)
    return out


def _batches(images: list[torch.Tensor], batch_size: int):
    """Consecutive runs of up to ``batch_size`` images of one size, stacked: (B, 3, H, W)."""
    start = 0
    while start < len(images):
        stop = start + 1
        while stop < min(start + batch_size, len(images)) and images[stop].shape == images[start].shape:
            stop += 1
        yield torch.stack(images[start:stop])
        start = stop


# ---------------------------------------------------------------- generation
def is_world_pipeline(pipe) -> bool:
    """Whether ``pipe`` makes shapes-world images (a built-in teacher or a student on its components)."""
    from ..world.autoencoder import WorldAutoencoder

    world_vae = isinstance(getattr(pipe, "vae", None), WorldAutoencoder)
    return getattr(pipe, "lindit_builtin", None) is not None or world_vae


def is_class_conditional(pipe) -> bool:
    from ..integrations.diffusers.families import family_of

    return family_of(pipe.transformer).class_conditional


def trained_size(pipe) -> int:
    """The pixel size the transformer was trained at: its latent sample size times the VAE factor."""
    from ..generate import trained_size as of_pipe

    return of_pipe(pipe)


def generate_batches(pipe, conditions: list, height: int, width: int, steps: int = 20, guidance: float = 4.5,
                     seed: int = 0, batch_size: int = 8):
    """Yield (conditions, PIL images) per pipeline call of up to ``batch_size`` images, one image per condition
    (a prompt, or a class id for DiT). Call b uses seed ``seed + b``: the same seed and batch size give the
    same images."""
    from ..generate import Request, run

    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if not conditions:
        raise ValueError("no prompts or class labels to generate from")
    encode = getattr(pipe, "lindit_encode_prompts", None)
    pipe.set_progress_bar_config(disable=True)  # one bar over all images instead of one per call
    with tqdm(total=len(conditions), desc="generating", unit="img") as bar:
        for b, start in enumerate(range(0, len(conditions), batch_size)):
            part = list(conditions[start:start + batch_size])
            labels = part if isinstance(part[0], int) else None
            req = Request(prompts=[] if labels else part, height=height, width=width, steps=steps,
                          guidance=guidance, seed=seed + b, class_labels=labels)
            images = run(pipe, req, encode)
            bar.update(len(part))
            yield part, images


def generate(pipe, conditions: list, height: int, width: int, **kwargs) -> list:
    """All images of ``generate_batches`` (same arguments) in one list."""
    return [image for _, images in generate_batches(pipe, conditions, height, width, **kwargs) for image in images]


# ---------------------------------------------------------------- metrics
class _Skip(ValueError):
    """These inputs do not allow the metric (e.g. too few images for FID); the message says why."""


def fid_metric_on(feature: nn.Module, **kwargs):
    """torchmetrics' streaming FID on the features of ``feature``: ``update(images (B, 3, H, W) float in [0, 1],
    real=...)``, then ``compute()``. ``kwargs`` go to torchmetrics (e.g. ``reset_real_features=False``)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    # normalize=True: floats in [0, 1] reach ``feature`` as they are
    return FrechetInceptionDistance(feature=feature, normalize=True, **kwargs)


def _unit_batches(images: list[torch.Tensor], batch_size: int):
    """uint8 images (3, H, W) -> float batches (B, 3, H, W) in [0, 1], one size per batch."""
    for batch in _batches(images, batch_size):
        yield batch.float() / 255


def _update_fids(metrics: list, images: list[torch.Tensor], real: bool, batch_size: int) -> None:
    for batch in _unit_batches(images, batch_size):
        for metric in metrics:
            metric.update(batch, real=real)


def _compute_fid(metric) -> float:
    counts = {"reference": int(metric.real_features_num_samples), "generated": int(metric.fake_features_num_samples)}
    for name, count in counts.items():
        if count < 2:
            raise _Skip(f"FID needs at least 2 {name} images, got {count}")
    return float(metric.compute())


def frechet_distance_of_batches(real, fake, feature: nn.Module) -> float:
    """The Frechet distance between the feature Gaussians of two image sets, each given as batches
    (B, 3, H, W) float in [0, 1] (torchmetrics' FID on ``feature``); the one place lindit computes it."""
    metric = fid_metric_on(feature)
    for batches, is_real in ((real, True), (fake, False)):
        for batch in batches:
            metric.update(batch, real=is_real)
    return _compute_fid(metric)


def frechet_distance(real, fake, feature: nn.Module, batch_size: int = 32) -> float:
    """Frechet distance between two image sets on the features of ``feature`` (torchmetrics' FID).

    ``feature``: any module mapping images (B, 3, H, W) float in [0, 1] to (B, F), with ``num_features``
    (``InceptionFeatures`` for real FID, ``lindit.world.fid.WorldFeatures`` for the world's).
    """
    return frechet_distance_of_batches(_unit_batches(as_uint8(real), batch_size),
                                       _unit_batches(as_uint8(fake), batch_size), feature)


class _TensorFeatures(nn.Module):
    """A CLIPModel whose ``get_*_features`` return tensors: torchmetrics 1.9 expects tensors, transformers 5
    returns model outputs (whose ``pooler_output`` holds the projected features)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _projected(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _projected(self.model.get_text_features(*args, **kwargs))


def _projected(out) -> torch.Tensor:
    return out if torch.is_tensor(out) else out.pooler_output


def load_clip(folder: str | Path) -> tuple[nn.Module, object]:
    """(model, processor) of the CLIP model saved in a local folder (transformers' CLIPModel + CLIPProcessor)."""
    from transformers import CLIPModel, CLIPProcessor

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"CLIP model folder {folder} has no config.json; give a local folder holding a "
                                "transformers CLIPModel and its CLIPProcessor (models cannot be downloaded here)")
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    return model, CLIPProcessor.from_pretrained(str(folder), local_files_only=True)


def _clip_metric(clip):
    """torchmetrics' CLIPScore on a local folder or a (CLIPModel, CLIPProcessor) pair."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = load_clip(clip) if isinstance(clip, (str, Path)) else clip
    return CLIPScore(model_name_or_path=lambda: (_TensorFeatures(model), processor))


def clip_score(images, prompts: list[str], clip, batch_size: int = 32) -> float:
    """torchmetrics' CLIP score, max(mean over images of 100 * cos(image, its prompt), 0).

    clip: a local CLIP folder or a (CLIPModel, CLIPProcessor) pair from ``load_clip``.
    """
    return evaluate(images, prompts, clip=clip, batch_size=batch_size)["metrics"]["clip_score"]


def class_hits(images: list[torch.Tensor], class_ids: list[int]) -> int:
    """How many images show exactly one object, of the shape and colour of their shapes-world class."""
    from ..world.detect import detect
    from ..world.shapes import ShapesClassDataset

    check_labels(list(class_ids), ShapesClassDataset.num_classes)
    hits = 0
    for image, class_id in zip(images, class_ids):
        want, found = ShapesClassDataset.class_object(int(class_id)), detect(image)
        hits += len(found) == 1 and (found[0].shape, found[0].colour) == (want.shape, want.colour)
    return hits


def class_adherence(images, class_ids: list[int]) -> float:
    """Fraction of images showing exactly one object, of the shape and colour of their class (any position)."""
    images = as_uint8(images)
    if len(images) != len(class_ids) or not class_ids:
        raise ValueError(f"{len(images)} images but {len(class_ids)} class labels")
    return class_hits(images, class_ids) / len(class_ids)


def caption_hits(images: list[torch.Tensor], captions: list[str]) -> int:
    """How many images show exactly the objects of their caption; a caption outside the world's grammar
    makes the metric meaningless (``_Skip``)."""
    from ..world.detect import matches
    from ..world.grammar import parse_caption

    hits = 0
    for image, text in zip(images, captions):
        try:
            label = parse_caption(text)
        except ValueError as err:
            raise _Skip(f"prompt {text!r} is not a caption of the shapes world: {err}") from None
        hits += matches(image, label)
    return hits


class Evaluation:
    """Running metrics of generated images against fixed inputs: ``add`` batches, then ``report``.

    reference: real images for the FIDs (a folder, a list of files, or images), read once here.
    feature: the FID feature extractor (``InceptionFeatures.from_file(...)``, or any stand-in module).
    clip: a local CLIP folder or (model, processor). world: add the shapes world's adherence and FID.
    """

    def __init__(self, reference=None, feature: nn.Module | None = None, clip=None, world: bool = False,
                 batch_size: int = 32):
        self.batch_size, self.skipped = batch_size, {}
        self.fids = self._fid_metrics(reference is not None, feature, world)
        self.clip = _clip_metric(clip) if clip is not None else None
        if clip is None:
            self.skipped["clip_score"] = "no CLIP model (--clip-model)"
        self.hits = 0 if world else None
        if not world:
            self.skipped["adherence"] = "not a shapes-world model"
        self.count = 0
        if self.fids:
            self._add_reference(reference)

    def _fid_metrics(self, has_reference: bool, feature, world: bool) -> dict:
        """The FID metrics these inputs allow; the others go to ``skipped`` with the reason."""
        from ..world.fid import WorldFeatures

        no_reference, extractors = "no reference images (--reference)", {}
        if not has_reference:
            self.skipped["fid"] = no_reference
        elif feature is None:
            self.skipped["fid"] = "no Inception weights (--inception-weights) or other feature extractor"
        else:
            extractors["fid"] = feature
        if not world:
            self.skipped["world_fid"] = "not a shapes-world model"
        elif not has_reference:
            self.skipped["world_fid"] = no_reference
        else:
            extractors["world_fid"] = WorldFeatures()
        return {name: fid_metric_on(extractor) for name, extractor in extractors.items()}

    def _add_reference(self, reference) -> None:
        files = image_files(reference) if isinstance(reference, (str, Path)) else reference
        for start in tqdm(range(0, len(files), self.batch_size), desc="reference features", unit="batch"):
            chunk = files[start:start + self.batch_size]
            images = load_images(chunk) if isinstance(chunk[0], (str, Path)) else chunk
            _update_fids(list(self.fids.values()), as_uint8(images), True, self.batch_size)

    def add(self, images, conditions: list) -> None:
        """One batch of generated images and their prompts or class ids."""
        images = as_uint8(images)
        if len(images) != len(conditions):
            raise ValueError(f"{len(images)} images but {len(conditions)} prompts or class labels")
        _update_fids(list(self.fids.values()), images, False, self.batch_size)
        texts = not isinstance(conditions[0], int)
        if self.clip is not None and texts:
            self.clip.update(images, list(conditions))
        elif self.clip is not None:
            self.clip, self.skipped["clip_score"] = None, "class-conditional model: no prompts to compare with"
        if self.hits is not None:
            self._add_adherence(images, conditions, texts)
        self.count += len(images)

    def _add_adherence(self, images, conditions, texts: bool) -> None:
        try:
            self.hits += caption_hits(images, conditions) if texts else class_hits(images, conditions)
        except _Skip as why:
            self.hits, self.skipped["adherence"] = None, str(why)

    def report(self) -> dict:
        """{"metrics": {name: value}, "skipped": {name: why}}, together covering ``METRICS``."""
        if self.count == 0:
            raise ValueError("no images to evaluate")
        values, skipped = {}, dict(self.skipped)
        for name, metric in self.fids.items():
            try:
                values[name] = _compute_fid(metric)
            except _Skip as why:
                skipped[name] = str(why)
        if self.clip is not None:
            values["clip_score"] = float(self.clip.compute())
        if self.hits is not None:
            values["adherence"] = self.hits / self.count
        return {"metrics": {k: round(values[k], 6) for k in METRICS if k in values},
                "skipped": {k: skipped[k] for k in METRICS if k in skipped}}


def evaluate(images, conditions: list, reference=None, feature: nn.Module | None = None, clip=None,
             world: bool = False, batch_size: int = 32) -> dict:
    """``Evaluation`` of a whole list of images (one per condition): {"metrics": ..., "skipped": ...}."""
    if len(images) != len(conditions):
        raise ValueError(f"{len(images)} images but {len(conditions)} prompts or class labels")
    evaluation = Evaluation(reference, feature, clip, world, batch_size)
    for start in tqdm(range(0, len(conditions), batch_size), desc="measuring", unit="batch"):
        evaluation.add(images[start:start + batch_size], conditions[start:start + batch_size])
    return evaluation.report()
