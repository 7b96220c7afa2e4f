"""Video rendering of the embedded dataset: particle fields in motion, with motion blur.

MAiVAR (Shaikh et al. 2024) fuses a video stream with audio-images; the embedded dataset gives
each class one kind of motion (this module) and one kind of sound
(:mod:`maivar_tf.data.synthetic.sound`). The video features are taken from randomly
initialised CNNs and globally average-pooled per frame; such features see colour, how much of
the frame is covered and how sharp or smeared the edges are far more than where things are.
So each motion is a *field* of 24-35 particles moving together, rendered with motion blur (the
average of :data:`SHUTTER_SAMPLES` positions within the frame interval), with its own kind of
particle:

* ``Slide``: small pucks travelling fast sideways -- long, faint horizontal streaks;
* ``Bounce``: balls hopping in step -- crisp at the top, vertical smears near the floor;
* ``Rotate``: bars spinning fast -- soft bow-tie fans;
* ``Pulse``: thin rings growing and shrinking in step -- sharp edges, periodic area.

The temporal pattern over the K segments differs too: constant for Slide and Rotate, periodic
blur for Bounce and periodic area for Pulse. Untrimmed clips (:func:`render_untrimmed_video`)
show their class's motion only inside the annotated span; outside it, a background
:data:`DISTRACTOR` field shared by every class: a few large, dim blobs drifting slowly. The backdrop is a tint of the mean colour that
the network subtracts, so it enters the network as almost zero and the particles dominate the
pooled features. Everything random comes from the generators passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maivar_tf.config import SynthConfig

__all__ = ["DISTRACTOR", "MOTIONS", "SHUTTER_SAMPLES", "motion_coverage", "render_untrimmed_video",
           "render_video"]

#: Kinds of object motion, in class order.
MOTIONS: tuple[str, ...] = ("Slide", "Bounce", "Rotate", "Pulse")
#: The background motion of untrimmed clips, the same kind for every class.
DISTRACTOR = "Drift"
#: Positions averaged per frame (motion blur over a 360-degree shutter).
SHUTTER_SAMPLES = 8


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i],
                    dtype=np.float32)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


#: The RGB mean that BNInception / TSN subtract from their input (BGR 104, 117, 128). A
#: background near it enters the network as almost zero, so globally pooled features of a
#: randomly initialised network are dominated by the moving objects, not by the backdrop.
_NETWORK_MEAN_RGB = np.array([128.0, 117.0, 104.0], np.float32)


def _scene(group_rng: np.random.Generator, clip_rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background colours (two, for a gradient) and the object colour, in 0..255.

    The backdrop is a tint of the network mean shared by a group (like a UCF101 group's
    scene); the objects' colour is drawn per clip, always with a clear contrast to the backdrop.
    """
    bg0 = _NETWORK_MEAN_RGB + group_rng.uniform(-25, 25, 3).astype(np.float32)
    bg1 = bg0 + clip_rng.uniform(-12, 12, 3).astype(np.float32)
    while True:
        obj = _hsv_to_rgb(clip_rng.uniform(), clip_rng.uniform(0.5, 1.0),
                          clip_rng.uniform(0.6, 1.0)) * 255
        if min(abs(_luma(obj) - _luma(bg0)), abs(_luma(obj) - _luma(bg1))) > 60:
            return bg0, bg1, obj


def _soft(x: np.ndarray) -> np.ndarray:
    """Anti-aliased inside-ness from a signed distance (positive inside), in [0, 1]."""
    x += np.float32(0.5)
    np.maximum(x, np.float32(0.0), out=x)
    return np.minimum(x, np.float32(1.0), out=x)


#: Per-particle values as a [P, 1] column.
_COL = (slice(None), None)


def _full(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.broadcast_to(a[_COL], like.shape)


def _slide(rng: np.random.Generator, p: int, w: int, h: int, scale: float):
    """Small pucks travelling fast sideways, wrapping around: long horizontal streaks."""
    r = rng.uniform(3, 5, p) * scale
    speed = rng.choice([-1.0, 1.0]) * rng.uniform(250, 400) * scale
    margin = 2 * r.max()
    x0 = rng.uniform(0, w + 2 * margin, p)
    cy = rng.uniform(0, h, p)

    def slide(t):
        x = np.mod(x0[_COL] + speed * t[None], w + 2 * margin) - margin
        return ("disc", x, _full(cy, x), _full(r, x))
    return slide


def _bounce(rng: np.random.Generator, p: int, w: int, h: int, scale: float):
    """Balls hopping in step (``|sin|``): fast at the floor, still on top."""
    r = rng.uniform(5, 8, p) * scale
    cx = rng.uniform(0, w, p)
    floor = rng.uniform(0.5 * h, h - r - 2)
    height = rng.uniform(0.5, 0.9, p) * (floor - r - 2)
    freq = rng.uniform(1.3, 1.9)
    phase = rng.uniform(0, np.pi) + rng.uniform(-0.2, 0.2, p)

    def bounce(t):
        y = floor[_COL] - height[_COL] * np.abs(np.sin(np.pi * freq * t[None] + phase[_COL]))
        return ("disc", _full(cx, y), y, _full(r, y))
    return bounce


def _rotate(rng: np.random.Generator, p: int, w: int, h: int, scale: float):
    """Elongated bars spinning fast about their centres: soft bow-tie fans."""
    half_len = rng.uniform(10, 16, p) * scale
    half_thick = rng.uniform(2.0, 3.5, p) * scale
    cx, cy = rng.uniform(0, w, p), rng.uniform(0, h, p)
    omega = rng.choice([-1.0, 1.0]) * rng.uniform(3.0, 4.0) * 2 * np.pi
    phase = rng.uniform(0, np.pi, p)

    def rotate(t):
        ang = phase[_COL] + omega * t[None]
        return ("bar", _full(cx, ang), _full(cy, ang), ang, half_len, half_thick)
    return rotate


def _pulse(rng: np.random.Generator, p: int, w: int, h: int, scale: float):
    """Thin rings whose radii oscillate together: sharp edges, periodic area."""
    r0 = rng.uniform(6, 11, p) * scale
    half_width = rng.uniform(1.0, 1.6, p) * scale
    amp = rng.uniform(0.35, 0.55)
    freq = rng.uniform(1.0, 2.0)
    cx, cy = rng.uniform(0, w, p), rng.uniform(0, h, p)
    phase = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.2, 0.2, p)

    def pulse(t):
        r = r0[_COL] * (1 + amp * np.sin(2 * np.pi * freq * t[None] + phase[_COL]))
        return ("ring", _full(cx, r), _full(cy, r), r, half_width)
    return pulse


def _drift(rng: np.random.Generator, w: int, h: int, scale: float):
    """The distractor: 4-7 large blobs drifting slowly together, wrapping around.

    Unlike every class motion: few and large (radius 14-24 px at 120 px height, the class
    particles are 3-16 px), slow (4-10 px/s against the class motions' hundreds of px/s or
    several Hz) and dim (:func:`_dim_colour`).
    """
    p = int(rng.integers(4, 8))
    r = rng.uniform(14, 24, p) * scale
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(4, 10) * scale
    vx, vy = speed * np.cos(direction), speed * np.sin(direction)
    margin = 2 * r.max()
    x0, y0 = rng.uniform(0, w + 2 * margin, p), rng.uniform(0, h + 2 * margin, p)

    def drift(t):
        x = np.mod(x0[_COL] + vx * t[None], w + 2 * margin) - margin
        y = np.mod(y0[_COL] + vy * t[None], h + 2 * margin) - margin
        return ("disc", x, y, _full(r, x))
    return drift


def _dim_colour(rng: np.random.Generator, backdrop: np.ndarray) -> np.ndarray:
    """The distractor's colour: 12-25 grey levels off the backdrop (class objects: > 60)."""
    sign = rng.choice([-1.0, 1.0])
    return (backdrop + np.float32(sign * rng.uniform(12, 25))
            + rng.uniform(-4, 4, 3).astype(np.float32)).astype(np.float32)


#: One particle-field builder per motion, in :data:`MOTIONS` order.
_FIELDS = (_slide, _bounce, _rotate, _pulse)


def _motion_path(motion: int, rng: np.random.Generator, w: int, h: int
                 ) -> Callable[[np.ndarray], tuple]:
    """Draws one clip's particle field; returns ``times [S] -> shapes``.

    A clip shows 24-35 particles that all move the same way, so the motion's texture covers a
    good part of every frame and dominates globally pooled features. Each motion has its own
    kind of particle, as real actions come with their own objects (see :data:`MOTIONS`).

    The returned tuple is ``(kind, cx, cy, size, extra...)``: ``("disc", cx, cy, r)``,
    ``("ring", cx, cy, r, half_width)`` or ``("bar", cx, cy, angle, half_len, half_thick)``,
    where ``cx``, ``cy`` and ``r``/``angle`` have shape ``[P, S]`` and the rest ``[P]``.
    """
    scale = h / 120.0
    p = int(rng.integers(24, 36))
    return _FIELDS[min(motion, len(_FIELDS) - 1)](rng, p, w, h, scale)


def _coverage(shapes: tuple, w: int, h: int) -> np.ndarray:
    """Coverage [h, w] of a particle field averaged over its sub-frame positions (motion blur).

    Particles overlap by taking the maximum coverage at each sub-frame instant; each particle
    is evaluated only inside the box it sweeps during the frame.
    """
    kind = shapes[0]
    cxs = np.asarray(shapes[1], np.float32)
    cys = np.asarray(shapes[2], np.float32)
    third = np.asarray(shapes[3], np.float32)  # radius (disc, ring) or angle (bar)
    if kind == "bar":
        reach = np.asarray(shapes[4], np.float32) + 2
    elif kind == "ring":
        reach = third.max(axis=1) + np.asarray(shapes[4], np.float32) + 2
    else:
        reach = third.max(axis=1) + 2
    x0 = np.clip(np.floor(cxs.min(axis=1) - reach), 0, w).astype(int).tolist()
    x1 = np.clip(np.ceil(cxs.max(axis=1) + reach), 0, w).astype(int).tolist()
    y0 = np.clip(np.floor(cys.min(axis=1) - reach), 0, h).astype(int).tolist()
    y1 = np.clip(np.ceil(cys.max(axis=1) + reach), 0, h).astype(int).tolist()
    gx = np.arange(w, dtype=np.float32) + np.float32(0.5)
    gy = np.arange(h, dtype=np.float32) + np.float32(0.5)
    if kind == "bar":
        cos, sin = np.cos(third), np.sin(third)
    buf = np.zeros((cxs.shape[1], h, w), np.float32)
    for i in range(cxs.shape[0]):
        if x1[i] <= x0[i] or y1[i] <= y0[i]:
            continue
        dx = gx[None, None, x0[i]:x1[i]] - cxs[i][:, None, None]
        dy = gy[None, y0[i]:y1[i], None] - cys[i][:, None, None]
        if kind == "bar":
            c, sn = cos[i][:, None, None], sin[i][:, None, None]
            cov = _soft(np.float32(shapes[4][i]) - np.abs(dx * c + dy * sn))
            cov *= _soft(np.float32(shapes[5][i]) - np.abs(dy * c - dx * sn))
        else:
            d = np.sqrt(dx * dx + dy * dy)
            r = third[i][:, None, None]
            if kind == "ring":
                cov = _soft(np.float32(shapes[4][i]) - np.abs(d - r))
            else:
                cov = _soft(r - d)
        region = buf[:, y0[i]:y1[i], x0[i]:x1[i]]
        np.maximum(region, cov, out=region)
    return buf.mean(axis=0)


def motion_coverage(motion: int, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """The motion-blurred coverage of one clip's particle field, frame by frame.

    Args:
        motion: index into :data:`MOTIONS`.
        rng: the clip's random stream (particles, speed, phase).
        cfg: the dataset config (size, fps, duration).

    Returns:
        float32 ``[round(seconds * fps), height, width]`` in [0, 1]: how much of each pixel's
        exposure the particles covered.
    """
    w, h = cfg.width, cfg.height
    path = _motion_path(motion, rng, w, h)
    n = int(round(cfg.seconds * cfg.fps))
    sub = (np.arange(SHUTTER_SAMPLES) + 0.5) / SHUTTER_SAMPLES / cfg.fps
    return np.stack([_coverage(path(i / cfg.fps + sub), w, h) for i in range(n)])


def _composite(bg0: np.ndarray, bg1: np.ndarray, colour: np.ndarray, alpha: np.ndarray,
               clip_rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Backdrop gradient + pixel noise + objects of ``colour`` ([3] or [T, 1, 1, 3]) at
    coverage ``alpha`` [T, H, W, 1], as uint8 RGB frames."""
    w, h = cfg.width, cfg.height
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    if clip_rng.uniform() < 0.5:
        ramp = ramp[:, ::-1]
    background = bg0 + (bg1 - bg0) * ramp + np.zeros((h, 1, 1), np.float32)
    noise_sigma = clip_rng.uniform(1.0, 4.0)
    img = clip_rng.standard_normal(alpha.shape[:3] + (3,), dtype=np.float32)
    img *= np.float32(noise_sigma)
    img += background
    img += (colour - background) * alpha
    np.rint(img, out=img)
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def render_video(motion: int, group_rng: np.random.Generator, clip_rng: np.random.Generator,
                 cfg: SynthConfig) -> np.ndarray:
    """Renders one clip's frames.

    Args:
        motion: index into :data:`MOTIONS`.
        group_rng: the random stream of the clip's group (backdrop tint).
        clip_rng: the clip's own random stream (particle colour, motion, noise).
        cfg: the dataset config (size, fps, duration).

    Returns:
        uint8 ``[round(seconds * fps), height, width, 3]`` RGB frames.
    """
    bg0, bg1, obj = _scene(group_rng, clip_rng)
    alpha = motion_coverage(motion, clip_rng, cfg)[..., None]
    return _composite(bg0, bg1, obj, alpha, clip_rng, cfg)


def render_untrimmed_video(motion: int, group_rng: np.random.Generator,
                           clip_rng: np.random.Generator, event_rng: np.random.Generator,
                           cfg: SynthConfig, span: tuple[float, float]) -> np.ndarray:
    """Renders one untrimmed clip: the class's motion inside ``span``, the distractor outside.

    Frame ``i`` (at ``i / fps`` s) shows the class's particle field (as :func:`render_video`
    draws it from ``clip_rng``) when ``start <= i / fps < end``, else the :data:`DISTRACTOR`
    field drawn from ``event_rng``; backdrop and noise as in :func:`render_video`.

    Args:
        motion: index into :data:`MOTIONS`.
        group_rng: the group's random stream (backdrop tint).
        clip_rng: the clip's random stream (object colour, class motion, noise).
        event_rng: the clip's span stream (distractor field and colour).
        cfg: the dataset config (size, fps, duration).
        span: ``(start_s, end_s)`` of the class's motion.

    Returns:
        uint8 ``[round(seconds * fps), height, width, 3]`` RGB frames.
    """
    w, h = cfg.width, cfg.height
    bg0, bg1, obj = _scene(group_rng, clip_rng)
    path = _motion_path(motion, clip_rng, w, h)
    drift = _drift(event_rng, w, h, h / 120.0)
    dim = _dim_colour(event_rng, bg0)
    n = int(round(cfg.seconds * cfg.fps))
    sub = (np.arange(SHUTTER_SAMPLES) + 0.5) / SHUTTER_SAMPLES / cfg.fps
    inside = [span[0] - 1e-9 <= i / cfg.fps < span[1] - 1e-9 for i in range(n)]
    alpha = np.stack([_coverage((path if inside[i] else drift)(i / cfg.fps + sub), w, h)
                      for i in range(n)])[..., None]
    colour = np.where(np.array(inside)[:, None, None, None], obj, dim).astype(np.float32)
    return _composite(bg0, bg1, colour, alpha, clip_rng, cfg)
