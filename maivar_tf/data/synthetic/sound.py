"""Audio rendering of the embedded dataset: four kinds of sound, told apart by pitch class.

MAiVAR (Shaikh et al. 2024) renders each clip's sound as audio-images (chromagram, MFCCs,
spectral centroid / rolloff, waveplot). The sounds differ in **pitch-class content**, so the
chromagram separates them: each kind draws its notes from one of the four augmented triads,
which partition the 12 pitch classes (:data:`SOUND_PITCH_CLASSES`; with two sounds,
{C, E, G#} against {D, F#, A#}, every note 2 semitones from the other set). Partials are
octaves (and the in-set major third) so the harmonics do not leak into another kind's pitch
classes. They also differ in **envelope and timbre** (sustained soft chime, bright decaying
plucks, a tremolo drone, pure beeps), so MFCCs, spectral centroid/rolloff and the waveplot
carry part of the information too. Everything random comes from the generators passed in.
Untrimmed clips (:func:`render_untrimmed_audio`) sound only inside their sound span and carry
background noise alone elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maivar_tf.config import SynthConfig

__all__ = ["SOUNDS", "SOUND_PITCH_CLASSES", "render_audio", "render_untrimmed_audio"]

#: Kinds of sound, in class order.
SOUNDS: tuple[str, ...] = ("Chime", "Pluck", "Drone", "Beep")
#: Pitch classes (0 = C) each sound kind draws notes from: the four augmented triads. The order
#: puts the first two kinds 2 semitones apart, the most two 3-note sets can be.
SOUND_PITCH_CLASSES: tuple[tuple[int, ...], ...] = ((0, 4, 8), (2, 6, 10), (1, 5, 9),
                                                    (3, 7, 11))

#: ``add(start_s, dur_s, partials, envelope)``: mixes one note into the clip's waveform.
_AddNote = Callable[[float, float, tuple, Callable[[np.ndarray], np.ndarray]], None]


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


def _chime(add: _AddNote, clip_rng: np.random.Generator, t_on: float, seconds: float) -> None:
    """Sustained soft tones, overlapping, with a slow attack and release."""
    step = clip_rng.uniform(0.45, 0.8)
    while t_on < seconds:
        dur = clip_rng.uniform(0.7, 1.2)
        add(t_on, dur, _SOFT, lambda t, d=dur: (np.minimum(t / 0.06, 1.0)
                                                 * np.minimum((d - t) / 0.15, 1.0)
                                                 * np.exp(-t / 1.5)))
        t_on += step * clip_rng.uniform(0.8, 1.2)


def _pluck(add: _AddNote, clip_rng: np.random.Generator, t_on: float, seconds: float) -> None:
    """Bright notes with a sharp attack and a fast exponential decay."""
    step = clip_rng.uniform(0.14, 0.3)
    tau = clip_rng.uniform(0.05, 0.12)
    while t_on < seconds:
        add(t_on, 6 * tau, _BRIGHT, lambda t: np.minimum(t / 0.003, 1.0) * np.exp(-t / tau))
        t_on += step * clip_rng.uniform(0.85, 1.15)


def _drone(add: _AddNote, clip_rng: np.random.Generator, t_on: float, seconds: float) -> None:
    """One or two long reedy tones with tremolo."""
    rate = clip_rng.uniform(4.0, 8.0)
    depth = clip_rng.uniform(0.3, 0.6)
    for _ in range(int(clip_rng.integers(1, 3))):
        dur = seconds - t_on
        add(t_on, dur, _REEDY, lambda t, d=dur: (np.minimum(t / 0.2, 1.0)
                                                 * np.minimum((d - t) / 0.1, 1.0)
                                                 * (1 - depth * (0.5 + 0.5 * np.sin(
                                                     2 * np.pi * rate * t)))))


def _beep(add: _AddNote, clip_rng: np.random.Generator, t_on: float, seconds: float) -> None:
    """Short pure sine tones in a regular rhythm."""
    step = clip_rng.uniform(0.2, 0.4)
    length = clip_rng.uniform(0.06, 0.12)
    while t_on < seconds:
        add(t_on, length, ((1, 1.0),), lambda t, d=length: np.minimum(
            np.minimum(t / 0.005, 1.0), np.maximum((d - t) / 0.005, 0.0)))
        t_on += step


#: One note pattern per sound kind, in :data:`SOUNDS` order.
_PATTERNS = (_chime, _pluck, _drone, _beep)


def _notes(sound: int, group_rng: np.random.Generator, clip_rng: np.random.Generator, sr: int,
           seconds: float) -> tuple[np.ndarray, float]:
    """The sound kind's notes over ``seconds``, peak-normalised to a random loudness, and the
    group's noise level (drawn first, as the trimmed clips always drew it)."""
    n = int(round(seconds * sr))
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
    _PATTERNS[min(sound, len(_PATTERNS) - 1)](add, clip_rng, t_on, seconds)
    peak = np.max(np.abs(y))
    if peak > 0:
        y *= clip_rng.uniform(0.15, 0.6) / peak
    return y, noise_level


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
    n = int(round(cfg.seconds * cfg.audio_rate))
    y, noise_level = _notes(sound, group_rng, clip_rng, cfg.audio_rate, cfg.seconds)
    y += clip_rng.standard_normal(n) * noise_level
    return np.clip(y, -1.0, 1.0).astype(np.float32)


#: Fade in and out at the edges of an untrimmed clip's sound span (no clicks).
_SPAN_FADE_S = 0.01


def render_untrimmed_audio(sound: int, group_rng: np.random.Generator,
                           clip_rng: np.random.Generator, cfg: SynthConfig,
                           sound_span: tuple[float, float]) -> np.ndarray:
    """Renders one untrimmed clip's waveform: the sound kind only inside ``sound_span``.

    The notes (as :func:`render_audio` draws them) fill ``[start, end)`` with
    :data:`_SPAN_FADE_S` fades at its edges; the group's background noise runs through the
    whole clip, so outside the span there is noise only.

    Args:
        sound: index into :data:`SOUNDS`.
        group_rng: the group's random stream (base octave, noise level).
        clip_rng: the clip's random stream (notes, loudness, noise).
        cfg: the dataset config (rate, duration).
        sound_span: ``(start_s, end_s)`` of the sound, inside ``[0, seconds]``.

    Returns:
        float32 ``[round(seconds * audio_rate)]`` samples in [-1, 1].
    """
    sr = cfg.audio_rate
    n = int(round(cfg.seconds * sr))
    i0 = min(max(int(round(sound_span[0] * sr)), 0), n)
    i1 = min(max(int(round(sound_span[1] * sr)), i0), n)
    notes, noise_level = _notes(sound, group_rng, clip_rng, sr, (i1 - i0) / sr)
    notes = notes[:i1 - i0]
    fade = max(1, int(round(_SPAN_FADE_S * sr)))
    ramp = np.minimum(np.minimum(np.arange(notes.size) + 1, notes.size - np.arange(notes.size))
                      / fade, 1.0)
    y = np.zeros(n)
    y[i0:i0 + notes.size] = notes * ramp
    y += clip_rng.standard_normal(n) * noise_level
    return np.clip(y, -1.0, 1.0).astype(np.float32)
