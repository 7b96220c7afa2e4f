"""The embedded audio-visual dataset: real MP4 files (H.264 + AAC) in UCF101 layout.

Each class crosses one kind of object motion with one kind of sound, so neither modality can
name the class alone: video alone tops out near ``1/num_sounds`` accuracy, audio alone near
``1/num_motions``, and the two together near 100% -- the setting where MAiVAR's audio-image +
video fusion (Shaikh et al. 2024) should beat both single-modality models.

The video features are taken from *randomly initialised* CNNs (no pretrained weights are
needed) and globally average-pooled per frame. Such features barely see where things are or
which way an edge points (turning a frame by 90 degrees moves BNInception's pooled features
about half as much as swapping in another clip of the same class); they mostly see colour,
how much of the frame is covered, and how sharp or smeared the edges are. So each motion is a
*field* of 24-35 particles moving together, rendered with **motion blur** (the average of
``SHUTTER_SAMPLES`` positions within the frame interval), and each motion has its own kind of
particle, as real actions come with their own objects:

* ``Slide``: small pucks travelling fast sideways -- long, faint horizontal streaks;
* ``Bounce``: balls hopping in step -- crisp at the top, vertical smears near the floor;
* ``Rotate``: bars spinning fast -- soft bow-tie fans;
* ``Pulse``: thin rings growing and shrinking in step -- sharp edges, periodic area.

The temporal pattern over the K segments differs too: constant for Slide and Rotate, periodic
blur for Bounce and periodic area for Pulse. The backdrop is a tint of the mean colour that
the network subtracts, so it enters the network as almost zero and the particles dominate the
pooled features. Measured on the default dataset's MP4s (train/test split 1): logistic
regression on random-init BNInception features of K=8 centre frames (flattened) recognises the
motion of 90% of the test videos (chance 25%); on the raw chromagram it recognises the sound of
100% (MFCC 81%, spectral centroid 79%, rolloff 74%, waveplot envelope 94%).

The sounds differ in **pitch-class content**, so the chromagram separates them: each kind draws
its notes from one of the four augmented triads, which partition the 12 pitch classes
(:data:`SOUND_PITCH_CLASSES`; with two sounds, {C, E, G#} against {D, F#, A#}, every note 2
semitones from the other set). Partials are octaves (and the in-set major third) so the
harmonics do not leak into another kind's pitch classes. They also differ in **envelope and
timbre** (sustained soft chime, bright decaying plucks, a tremolo drone, pure beeps), so MFCCs,
spectral centroid/rolloff and the waveplot carry part of the information too.

Nuisance variation, so that nothing but motion and sound predicts the class: particle colour
(any hue), count, sizes, positions, speed, direction and phase; backdrop tint, gradient and
pixel noise; note onsets, tempo, octave, loudness and background noise. The backdrop tint and
the base octave and noise level are drawn per *group* (like UCF101's groups of clips sharing a
scene), and test videos use other groups than train videos.

Files are deterministic: every video's random stream is seeded from
``(cfg.seed, motion, sound, group, clip)``, so one config always decodes to identical frames and
samples. Generation is idempotent: ``synth_manifest.json`` records the config; calling again
with the same config skips existing files, a different config regenerates everything.

Example:
    >>> from maivar_tf.config import SynthConfig
    >>> root = generate_dataset("data/videos", SynthConfig())
    >>> read_ucf101(root, 1, root).class_names[:2]
    ('Slide_Chime', 'Slide_Pluck')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from maivar_tf.config import SynthConfig

#: Bump whenever rendering changes, so existing datasets are regenerated.
GENERATOR_VERSION = 2
MANIFEST_NAME = "synth_manifest.json"
#: Kinds of object motion, in class order.
MOTIONS: tuple[str, ...] = ("Slide", "Bounce", "Rotate", "Pulse")
#: Kinds of sound, in class order.
SOUNDS: tuple[str, ...] = ("Chime", "Pluck", "Drone", "Beep")
#: Pitch classes (0 = C) each sound kind draws notes from: the four augmented triads. The order
#: puts the first two kinds 2 semitones apart, the most two 3-note sets can be.
SOUND_PITCH_CLASSES: tuple[tuple[int, ...], ...] = ((0, 4, 8), (2, 6, 10), (1, 5, 9),
                                                    (3, 7, 11))
#: Positions averaged per frame (motion blur over a 360-degree shutter).
SHUTTER_SAMPLES = 8
#: Videos per UCF-style group (clips c01..cNN of one group share the backdrop tint and the
#: sound's base octave and noise level).
CLIPS_PER_GROUP = 4


def class_names(cfg: SynthConfig) -> tuple[str, ...]:
    """Class names, motion-major: ``("Slide_Chime", "Slide_Pluck", "Bounce_Chime", ...)``.

    Args:
        cfg: the dataset config (``num_motions`` x ``num_sounds`` classes).

    Returns:
        ``num_motions * num_sounds`` names ``<Motion>_<Sound>``.
    """
    return tuple(f"{m}_{s}" for m in MOTIONS[: cfg.num_motions] for s in SOUNDS[: cfg.num_sounds])


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Video:
    motion: int
    sound: int
    group: int
    clip: int
    split: str

    @property
    def class_name(self) -> str:
        return f"{MOTIONS[self.motion]}_{SOUNDS[self.sound]}"

    @property
    def rel_path(self) -> str:
        c = self.class_name
        return f"{c}/v_{c}_g{self.group:02d}_c{self.clip:02d}.mp4"


def _videos(cfg: SynthConfig) -> list[_Video]:
    """Every video of the dataset; test videos take the first groups, as in UCF101 split 1."""
    out = []
    for m in range(cfg.num_motions):
        for s in range(cfg.num_sounds):
            for split, count, first in (("test", cfg.test_per_class, 0),
                                        ("train", cfg.train_per_class, cfg.test_per_class)):
                g0 = -(-first // CLIPS_PER_GROUP)  # train groups start after the test groups
                for i in range(count):
                    out.append(_Video(m, s, g0 + i // CLIPS_PER_GROUP + 1,
                                      i % CLIPS_PER_GROUP + 1, split))
    return out


# ----------------------------------------------------------------------------- video


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


def _motion_path(motion: int, rng: np.random.Generator, w: int, h: int
                 ) -> Callable[[np.ndarray], tuple]:
    """Draws one clip's particle field; returns ``times [S] -> shapes``.

    A clip shows 24-35 particles that all move the same way, so the motion's texture covers a
    good part of every frame and dominates globally pooled features. Each motion has its own
    kind of particle, as real actions come with their own objects: small pucks that slide fast
    (long horizontal streaks), balls that bounce (crisp at the top, vertical smears near the
    floor), bars that spin (fans) and rings that pulse (sharp edges, oscillating area).

    The returned tuple is ``(kind, cx, cy, size, extra...)``: ``("disc", cx, cy, r)``,
    ``("ring", cx, cy, r, half_width)`` or ``("bar", cx, cy, angle, half_len, half_thick)``,
    where ``cx``, ``cy`` and ``r``/``angle`` have shape ``[P, S]`` and the rest ``[P]``.
    """
    scale = h / 120.0
    p = int(rng.integers(24, 36))
    col = (slice(None), None)  # per-particle values as a [P, 1] column

    def full(a, like):
        return np.broadcast_to(a[col], like.shape)

    if motion == 0:  # Slide: fast horizontal travel, wrapping around
        r = rng.uniform(3, 5, p) * scale
        speed = rng.choice([-1.0, 1.0]) * rng.uniform(250, 400) * scale
        margin = 2 * r.max()
        x0 = rng.uniform(0, w + 2 * margin, p)
        cy = rng.uniform(0, h, p)

        def slide(t):
            x = np.mod(x0[col] + speed * t[None], w + 2 * margin) - margin
            return ("disc", x, full(cy, x), full(r, x))
        return slide
    if motion == 1:  # Bounce: synchronised |sin| hops, fast at the floor, still on top
        r = rng.uniform(5, 8, p) * scale
        cx = rng.uniform(0, w, p)
        floor = rng.uniform(0.5 * h, h - r - 2)
        height = rng.uniform(0.5, 0.9, p) * (floor - r - 2)
        freq = rng.uniform(1.3, 1.9)
        phase = rng.uniform(0, np.pi) + rng.uniform(-0.2, 0.2, p)

        def bounce(t):
            y = floor[col] - height[col] * np.abs(np.sin(np.pi * freq * t[None] + phase[col]))
            return ("disc", full(cx, y), y, full(r, y))
        return bounce
    if motion == 2:  # Rotate: elongated bars spinning about their centres
        half_len = rng.uniform(10, 16, p) * scale
        half_thick = rng.uniform(2.0, 3.5, p) * scale
        cx, cy = rng.uniform(0, w, p), rng.uniform(0, h, p)
        omega = rng.choice([-1.0, 1.0]) * rng.uniform(3.0, 4.0) * 2 * np.pi
        phase = rng.uniform(0, np.pi, p)

        def rotate(t):
            ang = phase[col] + omega * t[None]
            return ("bar", full(cx, ang), full(cy, ang), ang, half_len, half_thick)
        return rotate
    # Pulse: rings whose radii oscillate together
    r0 = rng.uniform(6, 11, p) * scale
    half_width = rng.uniform(1.0, 1.6, p) * scale
    amp = rng.uniform(0.35, 0.55)
    freq = rng.uniform(1.0, 2.0)
    cx, cy = rng.uniform(0, w, p), rng.uniform(0, h, p)
    phase = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.2, 0.2, p)

    def pulse(t):
        r = r0[col] * (1 + amp * np.sin(2 * np.pi * freq * t[None] + phase[col]))
        return ("ring", full(cx, r), full(cy, r), r, half_width)
    return pulse


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
    w, h = cfg.width, cfg.height
    bg0, bg1, obj = _scene(group_rng, clip_rng)
    alpha = motion_coverage(motion, clip_rng, cfg)[..., None]
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    if clip_rng.uniform() < 0.5:
        ramp = ramp[:, ::-1]
    background = bg0 + (bg1 - bg0) * ramp + np.zeros((h, 1, 1), np.float32)
    noise_sigma = clip_rng.uniform(1.0, 4.0)
    img = clip_rng.standard_normal(alpha.shape[:3] + (3,), dtype=np.float32)
    img *= np.float32(noise_sigma)
    img += background
    img += (obj - background) * alpha
    np.rint(img, out=img)
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


# ----------------------------------------------------------------------------- audio


def _note_hz(pitch_class: int, octave: int) -> float:
    midi = 12 * (octave + 1) + pitch_class
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def _tone(f0: float, n: int, sr: int, partials: tuple[tuple[float, float], ...],
          phase_rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / sr
    out = np.zeros(n)
    for k, amp in partials:
        if k * f0 < 0.45 * sr:  # no aliasing
            out += amp * np.sin(2 * np.pi * k * f0 * t + phase_rng.uniform(0, 2 * np.pi))
    return out


# (harmonic number, amplitude): octaves and the major third (5th harmonic, +4 semitones, in
# the same augmented triad), never the fifth (3rd harmonic), which would land in another set.
_SOFT = ((1, 1.0), (2, 0.35), (4, 0.12))
_BRIGHT = ((1, 1.0), (2, 0.7), (4, 0.5), (5, 0.3), (8, 0.25))
_REEDY = ((1, 1.0), (2, 0.7), (4, 0.5), (5, 0.45), (8, 0.35), (10, 0.25), (16, 0.15))


def render_audio(sound: int, group_rng: np.random.Generator, clip_rng: np.random.Generator,
                 cfg: SynthConfig) -> np.ndarray:
    """Renders one clip's mono waveform.

    Args:
        sound: index into :data:`SOUNDS`.
        group_rng: the group's random stream (base octave, noise level).
        clip_rng: the clip's own random stream (notes, onsets, loudness, noise).
        cfg: the dataset config (rate, duration).

    Returns:
        float32 ``[round(seconds * audio_rate)]`` samples in [-1, 1].
    """
    sr = cfg.audio_rate
    n = int(round(cfg.seconds * sr))
    pcs = SOUND_PITCH_CLASSES[sound]
    base_octave = int(group_rng.integers(4, 6))  # 4 or 5
    noise_level = group_rng.uniform(0.002, 0.012)
    y = np.zeros(n)

    def add(start_s: float, dur_s: float, partials, env: Callable[[np.ndarray], np.ndarray]):
        i0 = int(start_s * sr)
        if i0 >= n:
            return
        m = min(int(dur_s * sr), n - i0)
        pc = pcs[int(clip_rng.integers(len(pcs)))]
        octave = base_octave + int(clip_rng.integers(0, 2))
        t = np.arange(m) / sr
        y[i0:i0 + m] += env(t) * _tone(_note_hz(pc, octave), m, sr, partials, clip_rng)

    t_on = clip_rng.uniform(0.0, 0.3)
    if sound == 0:  # Chime: sustained soft tones, overlapping, slow attack and release
        step = clip_rng.uniform(0.45, 0.8)
        while t_on < cfg.seconds:
            dur = clip_rng.uniform(0.7, 1.2)
            add(t_on, dur, _SOFT, lambda t, d=dur: (np.minimum(t / 0.06, 1.0)
                                                     * np.minimum((d - t) / 0.15, 1.0)
                                                     * np.exp(-t / 1.5)))
            t_on += step * clip_rng.uniform(0.8, 1.2)
    elif sound == 1:  # Pluck: bright notes with a sharp attack and fast exponential decay
        step = clip_rng.uniform(0.14, 0.3)
        tau = clip_rng.uniform(0.05, 0.12)
        while t_on < cfg.seconds:
            add(t_on, 6 * tau, _BRIGHT, lambda t: np.minimum(t / 0.003, 1.0) * np.exp(-t / tau))
            t_on += step * clip_rng.uniform(0.85, 1.15)
    elif sound == 2:  # Drone: one or two long reedy tones with tremolo
        rate = clip_rng.uniform(4.0, 8.0)
        depth = clip_rng.uniform(0.3, 0.6)
        for _ in range(int(clip_rng.integers(1, 3))):
            dur = cfg.seconds - t_on
            add(t_on, dur, _REEDY, lambda t, d=dur: (np.minimum(t / 0.2, 1.0)
                                                     * np.minimum((d - t) / 0.1, 1.0)
                                                     * (1 - depth * (0.5 + 0.5 * np.sin(
                                                         2 * np.pi * rate * t)))))
    else:  # Beep: short pure sine tones in a regular rhythm
        step = clip_rng.uniform(0.2, 0.4)
        length = clip_rng.uniform(0.06, 0.12)
        while t_on < cfg.seconds:
            add(t_on, length, ((1, 1.0),), lambda t, d=length: np.minimum(
                np.minimum(t / 0.005, 1.0), np.maximum((d - t) / 0.005, 0.0)))
            t_on += step
    peak = np.max(np.abs(y))
    if peak > 0:
        y *= clip_rng.uniform(0.15, 0.6) / peak
    y += clip_rng.standard_normal(n) * noise_level
    return np.clip(y, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- files


def _streams(cfg: SynthConfig, v: _Video) -> tuple[np.random.Generator, ...]:
    """(video group, video clip, audio group, audio clip) random streams of one video."""
    group = np.random.SeedSequence([cfg.seed, v.motion, v.sound, v.group])
    clip = np.random.SeedSequence([cfg.seed, v.motion, v.sound, v.group, v.clip])
    vg, ag = group.spawn(2)
    vc, ac = clip.spawn(2)
    return tuple(np.random.default_rng(s) for s in (vg, vc, ag, ac))


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> planar YUV 4:2:0, in NumPy (exact and machine-independent).

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB with even H and W.

    Returns:
        uint8 ``[T, H * 3 // 2, W]``: the Y plane, then U, then V (PyAV's ``yuv420p`` layout).
    """
    t, h, w, _ = frames.shape
    x = frames.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    # U and V are linear in RGB, so they are computed from the 2x2-averaged pixels
    m = x.reshape(t, h // 2, 2, w // 2, 2, 3)
    m = (m[:, :, 0, :, 0] + m[:, :, 0, :, 1] + m[:, :, 1, :, 0] + m[:, :, 1, :, 1]) * 0.25
    r, g, b = m[..., 0], m[..., 1], m[..., 2]
    u = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b

    def q(a: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(a), 0, 255).astype(np.uint8).reshape(t, -1)

    return np.concatenate([q(y), q(u), q(v)], axis=1).reshape(t, h * 3 // 2, w)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int, waveform: np.ndarray,
              sample_rate: int) -> None:
    """Writes H.264 (yuv420p) video and mono AAC audio into one MP4 container.

    The output is reproducible: the colour conversion is done in NumPy (not by swscale's
    CPU-specific code) and x264 runs single-threaded with ``cpu-independent=1``. Without the
    latter, x264 on AVX-512 machines was seen to produce different bitstreams (and decoded
    frames) from identical input in consecutive runs.

    Args:
        path: the output file (``.mp4``).
        frames: uint8 ``[T, H, W, 3]`` RGB, H and W even.
        fps: frames per second.
        waveform: float32 ``[N]`` mono samples in [-1, 1].
        sample_rate: the waveform's rate.
    """
    import av

    t, h, w, _ = frames.shape
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps,
                            options={"crf": "20", "preset": "veryfast", "threads": "1",
                                     "x264-params": "cpu-independent=1"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = Fraction(1, fps)
        aus = out.add_stream("aac", rate=sample_rate, layout="mono")
        yuv = rgb_to_yuv420p(frames)
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(yuv[i], format="yuv420p")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform[None], np.float32),
                                        format="fltp", layout="mono")
        af.sample_rate = sample_rate
        af.pts = 0
        out.mux(aus.encode(af))
        out.mux(aus.encode(None))


def _write_text_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _manifest(cfg: SynthConfig, videos: list[_Video]) -> dict:
    return {"generator": "maivar_tf.data.synthetic", "version": GENERATOR_VERSION,
            "config": dataclasses.asdict(cfg), "class_names": list(class_names(cfg)),
            "files": [v.rel_path for v in videos]}


def _make_video(cfg: SynthConfig, v: _Video, dest: str) -> str:
    """Renders and writes one video (a module-level function, so worker processes can run it)."""
    vg, vc, ag, ac = _streams(cfg, v)
    frames = render_video(v.motion, vg, vc, cfg)
    wave = render_audio(v.sound, ag, ac, cfg)
    dest_path = Path(dest)
    tmp = dest_path.with_name("." + dest_path.name + ".tmp")
    write_mp4(tmp, frames, cfg.fps, wave, cfg.audio_rate)
    os.replace(tmp, dest_path)
    return dest


def _run(jobs: list[tuple[_Video, Path]], cfg: SynthConfig, workers: int, progress: bool) -> None:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synth videos", unit="video")
    try:
        if workers <= 1 or len(jobs) < 2 * workers:  # too few videos to pay for the start-up
            for v, dest in jobs:
                _make_video(cfg, v, str(dest))
                if bar is not None:
                    bar.update()
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: the caller may hold TensorFlow/Beam threads
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_make_video, cfg, v, str(dest)) for v, dest in jobs]
            for fut in as_completed(futures):
                fut.result()
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()


def generate_dataset(out_dir: str | os.PathLike, cfg: SynthConfig, progress: bool = True,
                     workers: int | None = None) -> Path:
    """Generates the embedded dataset (idempotent and deterministic).

    Writes ``out_dir/<Class>/v_<Class>_gNN_cNN.mp4`` and, in UCF101 format, ``classInd.txt``,
    ``trainlist01.txt`` and ``testlist01.txt``, so ``read_ucf101(out_dir, 1, out_dir)`` reads
    it. ``synth_manifest.json`` records the config: with the same config, existing videos are
    kept untouched; with another config (or generator version) every video is rewritten and
    videos of the old manifest that the new config lacks are removed. Files are written under a
    temporary name and renamed, so an interrupted run never leaves a truncated video.

    Args:
        out_dir: the dataset folder (created if needed).
        cfg: the dataset config.
        progress: show a tqdm progress bar.
        workers: processes rendering and encoding in parallel (None: up to 2, the CPU count
            permitting). The output does not depend on it. Workers are spawned, so a script
            calling this with ``workers > 1`` needs the usual ``if __name__ == "__main__":``
            guard.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    videos = _videos(cfg)
    manifest = _manifest(cfg, videos)
    manifest_path = root / MANIFEST_NAME
    old = None
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = None
    same = bool(old) and all(old.get(k) == manifest[k] for k in ("version", "config"))
    if old and not same:
        keep = set(manifest["files"])
        for rel in old.get("files", []):
            p = root / rel
            if rel not in keep and p.is_file():
                p.unlink()
                try:
                    p.parent.rmdir()
                except OSError:
                    pass  # not empty
    if not same:  # record the new config first: an interrupted run resumes, never mixes configs
        _write_text_if_changed(manifest_path,
                               json.dumps({**manifest, "complete": False}, indent=1))

    jobs = []
    for v in videos:
        dest = root / v.rel_path
        if same and dest.is_file() and dest.stat().st_size > 0:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((v, dest))
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    _run(jobs, cfg, workers, progress)

    names = class_names(cfg)
    _write_text_if_changed(root / "classInd.txt",
                           "".join(f"{i} {c}\n" for i, c in enumerate(names, 1)))
    _write_text_if_changed(root / "trainlist01.txt", "".join(
        f"{v.rel_path} {names.index(v.class_name) + 1}\n" for v in videos if v.split == "train"))
    _write_text_if_changed(root / "testlist01.txt", "".join(
        f"{v.rel_path}\n" for v in videos if v.split == "test"))
    _write_text_if_changed(manifest_path, json.dumps({**manifest, "complete": True}, indent=1))
    return root
