"""simshop stage 3, **Images**: a picture per product, numpy only.

From the design notes: a 32 x 32 RGB picture per product (``image_size``): a silhouette from the type's
shape, filled with the colour, printed with the style's pattern, plus a random background, lighting gradient
and pixel noise. For image-only products (stage 2) this is the only place their colour and style show.
"""

from __future__ import annotations

import numpy as np

from retrieval_zoo.data.simshop.config import SimShopConfig, stage_rng
from retrieval_zoo.data.simshop.vocabulary import COLOR_RGB, PRODUCT_TYPES, STYLES


def _ellipse(u, v, cx, cy, rx, ry):
    return ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0


def _rect(u, v, x0, x1, y0, y1):
    return (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)


def _trapezoid(u, v, y0, y1, top_half_width, bottom_half_width):
    t = (v - y0) / (y1 - y0)
    return (t >= 0) & (t <= 1) & (np.abs(u) <= top_half_width + (bottom_half_width - top_half_width) * t)


def _annulus(u, v, cx, cy, r0, r1):
    radius = np.hypot(u - cx, v - cy)
    return (radius >= r0) & (radius <= r1)


# Each shape maps normalised coordinates (u right, v down, both in [-1, 1]) to (body, accent) masks. Every body
# covers the central square |u|, |v| <= 0.3, so the centre of an image always shows the product's colour.
SHAPES = {
    "shoe": lambda u, v: (_ellipse(u, v, 0, 0.12, 0.92, 0.5) | _ellipse(u, v, -0.45, -0.3, 0.38, 0.42),
                          _rect(u, v, -0.9, 0.92, 0.55, 0.7)),
    "boot": lambda u, v: (_rect(u, v, -0.5, 0.35, -0.85, 0.55) | _ellipse(u, v, 0.15, 0.25, 0.75, 0.32),
                          _rect(u, v, -0.55, 0.9, 0.55, 0.7)),
    "bag": lambda u, v: (_rect(u, v, -0.72, 0.72, -0.4, 0.82),
                         _annulus(u, v, 0, -0.4, 0.3, 0.4) & (v < -0.4)),
    "wallet": lambda u, v: (_rect(u, v, -0.82, 0.82, -0.52, 0.52), _rect(u, v, 0.58, 0.76, -0.1, 0.1)),
    "suitcase": lambda u, v: (_rect(u, v, -0.6, 0.6, -0.6, 0.82),
                              (_rect(u, v, -0.22, 0.22, -0.85, -0.6) & ~_rect(u, v, -0.13, 0.13, -0.77, -0.6))
                              | _ellipse(u, v, -0.42, 0.9, 0.09, 0.08) | _ellipse(u, v, 0.42, 0.9, 0.09, 0.08)),
    "shirt": lambda u, v: (_rect(u, v, -0.5, 0.5, -0.7, 0.9) | _rect(u, v, -0.92, 0.92, -0.7, -0.3),
                           _ellipse(u, v, 0, -0.7, 0.2, 0.12)),
    "dress": lambda u, v: (_trapezoid(u, v, -0.75, 0.92, 0.34, 0.82),
                           _rect(u, v, -0.3, -0.2, -0.95, -0.75) | _rect(u, v, 0.2, 0.3, -0.95, -0.75)),
    "trousers": lambda u, v: (_rect(u, v, -0.55, 0.55, -0.72, 0.4) | _rect(u, v, -0.55, -0.06, 0.4, 0.92)
                              | _rect(u, v, 0.06, 0.55, 0.4, 0.92), _rect(u, v, -0.55, 0.55, -0.86, -0.72)),
    "socks": lambda u, v: (_rect(u, v, -0.42, 0.36, -0.72, 0.45) | _ellipse(u, v, 0.2, 0.45, 0.65, 0.3),
                           _rect(u, v, -0.42, 0.36, -0.9, -0.72)),
    "cap": lambda u, v: (_ellipse(u, v, 0, 0.35, 0.74, 0.82) & (v <= 0.36), _rect(u, v, -0.1, 0.98, 0.36, 0.5)),
    "textile": lambda u, v: (_rect(u, v, -0.88, 0.88, -0.62, 0.62),
                             (np.abs(u) > 0.88) & (np.abs(u) < 0.98) & (np.abs(v) < 0.62) & ((v * 10) % 1 < 0.5)),
    "strap": lambda u, v: (_rect(u, v, -0.95, 0.95, -0.36, 0.36),
                           _rect(u, v, 0.55, 0.78, -0.45, 0.45) & ~_rect(u, v, 0.61, 0.72, -0.36, 0.36)),
    "mug": lambda u, v: (_rect(u, v, -0.55, 0.42, -0.62, 0.72), _annulus(u, v, 0.42, 0.05, 0.2, 0.33) & (u > 0.42)),
    "teapot": lambda u, v: (_ellipse(u, v, 0, 0.12, 0.62, 0.6) | _ellipse(u, v, 0, -0.5, 0.25, 0.12),
                            _rect(u, v, -0.95, -0.58, -0.12, 0.04) | (_annulus(u, v, 0.6, 0.1, 0.18, 0.3) & (u > 0.6))),
    "pan": lambda u, v: (_ellipse(u, v, -0.12, 0, 0.64, 0.64), _rect(u, v, 0.5, 1.0, -0.08, 0.08)),
    "bottle": lambda u, v: (_rect(u, v, -0.4, 0.4, -0.5, 0.92) | _rect(u, v, -0.18, 0.18, -0.75, -0.5),
                            _rect(u, v, -0.2, 0.2, -0.95, -0.75)),
    "box": lambda u, v: (_rect(u, v, -0.78, 0.78, -0.4, 0.68), _rect(u, v, -0.82, 0.82, -0.6, -0.42)),
    "cushion": lambda u, v: ((np.abs(u / 0.78) ** 4 + np.abs(v / 0.78) ** 4) <= 1.0,
                             _ellipse(u, v, 0.72, 0.72, 0.08, 0.08) | _ellipse(u, v, -0.72, -0.72, 0.08, 0.08)),
    "vase": lambda u, v: (_ellipse(u, v, 0, 0.2, 0.62, 0.72) | _rect(u, v, -0.22, 0.22, -0.8, -0.3),
                          _rect(u, v, -0.3, 0.3, -0.9, -0.78)),
    "lamp": lambda u, v: (_trapezoid(u, v, -0.85, 0.4, 0.28, 0.64),
                          _rect(u, v, -0.06, 0.06, 0.4, 0.82) | _rect(u, v, -0.4, 0.4, 0.82, 0.94)),
    "tent": lambda u, v: (_trapezoid(u, v, -1.0, 0.8, 0.02, 1.0), _trapezoid(u, v, 0.4, 0.8, 0.02, 0.2)),
    "sleeping_bag": lambda u, v: (_ellipse(u, v, 0, 0.05, 0.56, 0.92), _ellipse(u, v, 0, -0.72, 0.3, 0.14)),
    "chair": lambda u, v: (_rect(u, v, -0.6, 0.6, -0.85, 0.38),
                           _rect(u, v, -0.62, -0.5, 0.38, 0.95) | _rect(u, v, 0.5, 0.62, 0.38, 0.95)),
    "dumbbell": lambda u, v: (_rect(u, v, -0.5, 0.5, -0.36, 0.36) | _rect(u, v, -0.92, -0.52, -0.72, 0.72)
                              | _rect(u, v, 0.52, 0.92, -0.72, 0.72),
                              _rect(u, v, -0.52, -0.5, -0.72, 0.72) | _rect(u, v, 0.5, 0.52, -0.72, 0.72)),
    "phone": lambda u, v: (_rect(u, v, -0.5, 0.5, -0.88, 0.88), _rect(u, v, -0.4, -0.14, -0.78, -0.52)),
    "charger": lambda u, v: (_rect(u, v, -0.52, 0.52, -0.5, 0.52),
                             _rect(u, v, -0.3, -0.18, -0.85, -0.5) | _rect(u, v, 0.18, 0.3, -0.85, -0.5)
                             | _rect(u, v, -0.05, 0.05, 0.52, 0.98)),
    "round": lambda u, v: (_ellipse(u, v, 0, 0.02, 0.64, 0.64), _ellipse(u, v, 0, 0.5, 0.06, 0.06)),
    "mouse": lambda u, v: (_ellipse(u, v, 0, 0.05, 0.54, 0.84), _rect(u, v, -0.05, 0.05, -0.62, -0.38)),
    "keyboard": lambda u, v: (_rect(u, v, -0.95, 0.95, -0.42, 0.42), _rect(u, v, -0.04, 0.04, -0.85, -0.42)),
}
SHAPE_NAMES = tuple(SHAPES)
TYPE_SHAPE = np.array([SHAPE_NAMES.index(t.shape) for t in PRODUCT_TYPES])


IMAGE_CHUNK = 512  # products drawn at once: bounds memory whatever the catalogue size


def render_images(config: SimShopConfig, catalogue: dict[str, np.ndarray]) -> np.ndarray:
    rng = stage_rng(config, "images")
    looks = _sample_looks(rng, catalogue)
    n, size = len(catalogue["type"]), config.image_size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, IMAGE_CHUNK):
        rows = slice(start, start + IMAGE_CHUNK)
        images[rows] = _draw({name: values[rows] for name, values in looks.items()}, size, rng)
    return images


def _sample_looks(rng: np.random.Generator, catalogue: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Everything random about a product's picture except pixel noise, one row per product."""
    n = len(catalogue["type"])
    base = np.array(list(COLOR_RGB.values()), dtype=np.float32)[catalogue["color"]]
    base = np.clip(base + rng.normal(0, 6, (n, 3)), 0, 255).astype(np.float32)  # shades vary a little
    # The print is a shade of the colour itself (darker on light colours, lighter on dark ones), so the
    # average colour of the product stays near its prototype.
    luminance = base @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    light = luminance[:, None] > 140
    print_rgb = np.where(light, base * 0.7, base * 0.6 + 200 * 0.4).astype(np.float32)
    return {
        "shape": TYPE_SHAPE[catalogue["type"]],
        "style": catalogue["style"],
        "base": base,
        "print": print_rgb,
        "background": np.clip(rng.uniform(205, 250, (n, 1)) + rng.normal(0, 6, (n, 3)), 0, 255),
        # Placement jitter (shift, zoom) so that no two pictures are pixel-identical; a soft lighting gradient.
        "shift": rng.uniform(-0.05, 0.05, (n, 2)),
        "zoom": rng.uniform(0.95, 1.12, n),
        "lighting": rng.uniform(-0.06, 0.06, (n, 2)),
        "period": rng.uniform(0.32, 0.45, n),
        "phase": rng.uniform(0, 1, n),
        "angle": rng.choice(np.array([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]), n),
    }


def _draw(looks: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(looks["shape"])
    axis = ((np.arange(size) + 0.5) / size) * 2 - 1  # pixel centres in [-1, 1]
    zoom = looks["zoom"][:, None, None]
    u = np.broadcast_to((axis[None, None, :] - looks["shift"][:, 0, None, None]) / zoom, (n, size, size))
    v = np.broadcast_to((axis[None, :, None] - looks["shift"][:, 1, None, None]) / zoom, (n, size, size))

    body, accent, pattern = (np.zeros((n, size, size), dtype=bool) for _ in range(3))
    for s, shape_name in enumerate(SHAPE_NAMES):
        rows = np.flatnonzero(looks["shape"] == s)
        if len(rows):
            body[rows], accent[rows] = SHAPES[shape_name](u[rows], v[rows])
    for s, style in enumerate(STYLES):
        rows = np.flatnonzero(looks["style"] == s)
        if len(rows):
            params = (looks[name][rows, None, None] for name in ("period", "phase", "angle"))
            pattern[rows] = _pattern(style, u[rows], v[rows], *params)

    image = np.where(pattern[..., None], looks["print"][:, None, None], looks["base"][:, None, None])
    image = np.where(body[..., None], image, looks["background"][:, None, None])
    image = np.where((body & _edges(body))[..., None], image * 0.65, image)  # outline the silhouette
    image = np.where(accent[..., None], looks["base"][:, None, None] * 0.4 + 20, image)  # soles, handles: trim
    lighting = 1 + looks["lighting"][:, 0, None, None] * u + looks["lighting"][:, 1, None, None] * v
    image = image * lighting[..., None] + rng.normal(0, 7, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of a mask with a 4-neighbour outside it."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return ~interior


def _pattern(style: str, u: np.ndarray, v: np.ndarray, period: np.ndarray, phase: np.ndarray,
             angle: np.ndarray) -> np.ndarray:
    """Where the print shows. Thin strokes (a third of the area at most) keep the product's colour dominant."""
    x, y = u / period + phase, v / period + phase
    if style == "striped":
        return ((u * np.cos(angle) + v * np.sin(angle)) / period + phase) % 1 < 0.32
    if style == "polka dot":
        return (x % 1 - 0.5) ** 2 + (y % 1 - 0.5) ** 2 < 0.28**2
    if style == "checked":
        return (x % 1 < 0.2) | (y % 1 < 0.2)
    if style == "zigzag":
        return (y + np.abs((u / period) % 1 - 0.5)) % 1 < 0.3
    return np.zeros(u.shape, dtype=bool)  # plain
