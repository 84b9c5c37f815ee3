"""Frozen image features through open_clip, computed once per catalogue and cached on disk.

MRSE's VBert expert reads a *frozen* ViT-L image encoder through a trainable adaptor (arXiv 2408.14968). Frozen
means the features of a product never change during training, so they are computed once, stored under
``cache_dir()/"image_features"/<key>/`` and reused by every run and seed. The key names everything the features
depend on: the open_clip config name and a hash of the config itself, the checkpoint's content hash (or
``random-init-seed<k>``), the optional brief pre-training recipe, the preprocessing, and the images' content
hash. Change any of these and the key changes, so a stale cache is never read.

Three sources, in the order a model should prefer them:

1. precomputed features shipped with the dataset (``item_image_features``, e.g. SQID's CLIP ViT-L/14): nothing
   runs here;
2. an open_clip model with real weights on disk: ``ImageEncoderSpec(name="ViT-L-14",
   checkpoint="/path/open_clip_pytorch_model.bin")``;
3. on simshop (no weights can be downloaded): a small open_clip config registered below (``simshop-vit-tiny``,
   a 2-layer ViT of width 256 with 4 x 4 patches on 32 x 32 images), randomly initialised from a fixed seed
   and frozen as is (the default), or, with ``pretrain_epochs > 0``, first trained briefly CLIP-style on the
   catalogue's own (image, title) pairs. The title side of that objective is a bag of WordPiece embeddings that
   is thrown away afterwards; no labels, queries or clicks are used, only what a shop's catalogue holds.

With ``token_stats`` a ViT's vector is its pooled embedding followed by the mean and standard deviation of its
patch tokens: on simshop the pooled embedding of the random tower carries colour (linear probe 0.99) but little
of the print pattern (0.48), the token statistics bring that to 0.65 (majority class 0.30).

``linear_probe_accuracy`` measures what the frozen features carry (e.g. a product's colour): a closed-form ridge
classifier on a fixed 70/30 split.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retrieval_zoo import atomic_files
from retrieval_zoo.data import feature_cache
from retrieval_zoo.data.registry import cache_dir

# Small open_clip configs for 32 x 32 catalogue pictures (architectures are data, as in open_clip's
# model_configs/*.json). The text tower is tiny because only the image tower is used.
TINY_CONFIGS: dict[str, dict] = {
    "simshop-vit-tiny": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 256, "patch_size": 4, "head_width": 64},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
    "simshop-rn-tiny": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 32, "patch_size": None},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
}
CACHE_VERSION = 1  # bump when the extraction code changes its output


@dataclass(frozen=True)
class ImageEncoderSpec:
    """Which frozen image tower produces the features (the ``image_*`` keys of the MRSE config)."""

    name: str = "simshop-vit-tiny"     # an open_clip model name or one of TINY_CONFIGS
    checkpoint: str | None = None      # local open_clip checkpoint; None = random init from ``seed``
    seed: int = 0                      # init seed of a random tower (and of its brief pre-training)
    pretrain_epochs: int = 0           # CLIP-style (image, title) epochs on the catalogue before freezing
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 256
    token_stats: bool = True           # ViT: append the mean and std of the patch tokens to the pooled vector
    batch_size: int = 256              # images per forward pass at extraction


@dataclass
class ExtractionStats:
    seconds: float
    images_per_s: float | None         # extraction rate (on a cache hit: the rate recorded when extracted)
    cache_mb: float
    cache_hit: bool
    path: Path


# -- open_clip towers ---------------------------------------------------------------------------------------
def _register_tiny_configs() -> None:
    """Make TINY_CONFIGS visible to ``open_clip.create_model`` (add_model_config reads JSON files)."""
    import open_clip

    if all(name in open_clip.list_models() for name in TINY_CONFIGS):
        return
    # the scan reads the files at once and keeps what it read, so the folder can go straight after
    with tempfile.TemporaryDirectory(prefix="rz_open_clip_") as folder:
        for name, config in TINY_CONFIGS.items():
            (Path(folder) / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)


def model_config(name: str) -> dict:
    import open_clip

    _register_tiny_configs()
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"unknown open_clip model '{name}'; small configs here: {', '.join(TINY_CONFIGS)}, "
                         f"or any of open_clip.list_models()")
    return config


def build_clip(spec: ImageEncoderSpec) -> torch.nn.Module:
    """The open_clip model of ``spec``: weights from the checkpoint, else random from ``spec.seed``."""
    import open_clip

    model_config(spec.name)  # registers the tiny configs, fails clearly on an unknown name
    if spec.checkpoint is not None and not Path(spec.checkpoint).is_file():
        raise FileNotFoundError(f"image checkpoint '{spec.checkpoint}' does not exist")
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        return open_clip.create_model(spec.name, pretrained=spec.checkpoint)


def preprocess(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float, resized to the tower's input size, normalised as CLIP was trained."""
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    x = images.float() / 255.0
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _image_size(visual: torch.nn.Module) -> int:
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _pooled_vector(visual: torch.nn.Module, pixels: torch.Tensor, token_stats: bool) -> torch.Tensor:
    """One vector per image: the tower's pooled embedding, with ``token_stats`` (ViT towers) followed by the
    mean and standard deviation of its patch tokens, which keep texture (a print pattern) that the pooled
    embedding of a small random tower mostly averages away."""
    if not (token_stats and hasattr(visual, "output_tokens")):
        return visual(pixels)
    visual.output_tokens = True
    try:
        pooled, tokens = visual(pixels)
    finally:
        visual.output_tokens = False
    return torch.cat([pooled, tokens.mean(1), tokens.std(1)], dim=1)


@torch.no_grad()
def encode_images(visual: torch.nn.Module, images: torch.Tensor, batch_size: int,
                  token_stats: bool = False) -> np.ndarray:
    """Image vectors, float32 [N, D], in bounded-memory batches (the one expensive step)."""
    visual.eval()
    device = next(visual.parameters()).device
    size = _image_size(visual)
    chunks = [_pooled_vector(visual, preprocess(images[i : i + batch_size], size).to(device), token_stats).float()
              .cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).numpy().astype(np.float32)


def pretrain_on_catalogue(clip: torch.nn.Module, images: torch.Tensor, title_tokens: torch.Tensor,
                          spec: ImageEncoderSpec) -> None:
    """Briefly train the image tower CLIP-style against a bag-of-words title encoder (thrown away after).

    Symmetric InfoNCE over (image, title) pairs of the catalogue with a learnable temperature, horizontal flips
    as the only augmentation (colour jitter would erase the colour the tower should learn).
    """
    from torch import nn

    visual = clip.visual
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        embed_dim = int(visual(preprocess(images[:1], _image_size(visual))).shape[-1])
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        words = nn.EmbeddingBag(int(title_tokens.max()) + 1, embed_dim, mode="mean", padding_idx=0)
    log_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    optimizer = torch.optim.AdamW([*visual.parameters(), *words.parameters(), log_scale], lr=spec.pretrain_lr,
                                  weight_decay=0.05)
    pixels = preprocess(images, _image_size(visual))
    n, size = len(images), spec.pretrain_batch_size
    visual.train()
    for _ in range(spec.pretrain_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, max(n - size // 2, 1), size):  # the last short batch joins only if it is large
            rows = order[start : start + size]
            flip = torch.rand(len(rows), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), pixels[rows].flip(3), pixels[rows])
            image_vectors = F.normalize(visual(batch), dim=-1)
            title_vectors = F.normalize(words(title_tokens[rows]), dim=-1)
            logits = log_scale.exp().clamp(max=100) * image_vectors @ title_vectors.T
            targets = torch.arange(len(rows))
            loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    visual.eval()


# -- the cache ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hash(path: str) -> str:
    """Content hash of a checkpoint file (memoised per path, size and modification time)."""
    stat = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def content_hash(*arrays: np.ndarray | torch.Tensor) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(torch.as_tensor(array).numpy())
        digest.update(str((values.shape, values.dtype.str)).encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def cache_key(spec: ImageEncoderSpec, images: torch.Tensor, title_tokens: torch.Tensor | None = None) -> str:
    """``<config name>__<checkpoint hash | random-init-seed<k>>__<recipe hash>__<image hash>``."""
    weights = (checkpoint_hash(spec.checkpoint)[:16] if spec.checkpoint is not None
               else f"random-init-seed{spec.seed}")
    recipe = {"version": CACHE_VERSION, "config": model_config(spec.name), "preprocess": "clip-mean-std-bicubic",
              "token_stats": spec.token_stats}
    if spec.pretrain_epochs > 0 and spec.checkpoint is None:
        recipe["pretrain"] = {k: v for k, v in asdict(spec).items() if k.startswith("pretrain")}
        weights += f"-clip{spec.pretrain_epochs}ep"
    recipe_hash = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    data = (images,) if "pretrain" not in recipe else (images, title_tokens)
    return f"{spec.name}__{weights}__{recipe_hash}__{content_hash(*data)[:16]}"


def cached_image_features(images: torch.Tensor, spec: ImageEncoderSpec,
                          title_tokens: torch.Tensor | None = None,
                          root: Path | None = None) -> tuple[np.ndarray, ExtractionStats]:
    """Features of ``images`` (uint8 [N, 3, H, W]) from the frozen tower of ``spec``, from disk when cached.

    Built through ``feature_cache`` in chunks (resumable after an interrupt, checked against its manifest, read
    back as a memory map). A chunk is a whole number of encoder batches, so the vectors do not depend on where
    an interrupted build resumed."""
    if spec.pretrain_epochs > 0 and spec.checkpoint is None and title_tokens is None:
        raise ValueError("brief pre-training (pretrain_epochs > 0) needs the catalogue's title tokens")
    key = cache_key(spec, images, title_tokens)
    folder = (root or cache_dir() / "image_features") / key
    started = time.perf_counter()
    if (folder / "meta.json").exists() and not (folder / "manifest.json").exists():  # the one-matrix layout
        features = np.load(folder / "features.npy", mmap_mode="c")
        recorded = json.loads((folder / "meta.json").read_text()).get("images_per_s")
        return features, _stats(started, recorded, folder, cache_hit=True)
    encoder: dict[str, torch.nn.Module] = {}
    encoded = {"images": 0, "seconds": 0.0}

    def encode(rows: list[int]) -> np.ndarray:
        if not encoder:  # built (and briefly pre-trained) only when some chunk is not cached yet
            encoder["visual"] = _frozen_tower(spec, images, title_tokens)
        chunk_started = time.perf_counter()
        vectors = encode_images(encoder["visual"], images[rows[0] : rows[-1] + 1], spec.batch_size,
                                spec.token_stats)
        encoded["images"] += len(rows)
        encoded["seconds"] += time.perf_counter() - chunk_started
        return vectors

    chunk_rows = max(feature_cache.CHUNK_ROWS // spec.batch_size, 1) * spec.batch_size
    features = feature_cache.cached_features(folder, len(images), f"open_clip:{key}", encode,
                                             chunk_rows=chunk_rows, label=f"image features ({spec.name})")
    if not encoded["images"]:
        return features, _stats(started, _recorded_rate(folder), folder, cache_hit=True)
    rate = round(encoded["images"] / max(encoded["seconds"], 1e-9), 1)
    atomic_files.write_json(folder / "rate.json", {"images_per_s": rate, "spec": asdict(spec)})
    return features, _stats(started, rate, folder, cache_hit=False)


def _frozen_tower(spec: ImageEncoderSpec, images: torch.Tensor, title_tokens: torch.Tensor | None):
    clip = build_clip(spec)
    if spec.pretrain_epochs > 0 and spec.checkpoint is None:
        pretrain_on_catalogue(clip, images, title_tokens, spec)
    return clip.visual


def _recorded_rate(folder: Path) -> float | None:
    try:
        return json.loads((folder / "rate.json").read_text()).get("images_per_s")
    except (OSError, ValueError):  # the rate is a report, not part of the features
        return None


def _stats(started: float, rate: float | None, folder: Path, cache_hit: bool) -> ExtractionStats:
    size = (folder / "features.npy").stat().st_size / 2**20
    return ExtractionStats(time.perf_counter() - started, rate, size, cache_hit, folder)


# -- what the features carry --------------------------------------------------------------------------------
def linear_probe_accuracy(features: np.ndarray, labels: np.ndarray | list, ridge: float = 1.0,
                          train_share: float = 0.7, seed: int = 0) -> float:
    """Test accuracy of a closed-form ridge classifier (one-hot targets) on a fixed random split."""
    x = np.asarray(features, dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(train_share * len(x))
    train, test = order[:cut], order[cut:]
    design = np.c_[x, np.ones(len(x))]
    targets = np.eye(len(classes))[y]
    gram = design[train].T @ design[train] + ridge * np.eye(design.shape[1])
    weights = np.linalg.solve(gram, design[train].T @ targets[train])
    return float((np.argmax(design[test] @ weights, axis=1) == y[test]).mean())
