"""The embedded audio-visual dataset: real MP4 files (H.264 + AAC) in UCF101 layout.

Each class crosses one kind of object motion (:mod:`.motion`) with one kind of sound
(:mod:`.sound`), so neither modality can name the class alone: video alone tops out near
``1/num_sounds`` accuracy, audio alone near ``1/num_motions``, and the two together near
100% -- the setting where MAiVAR's audio-image + video fusion (Shaikh et al. 2024) should beat
both single-modality models. :mod:`.mp4` writes reproducible files; :mod:`.dataset` lays them
out as UCF101 (``read_ucf101(root, 1, root)`` reads them).

Nuisance variation, so that nothing but motion and sound predicts the class: particle colour
(any hue), count, sizes, positions, speed, direction and phase; backdrop tint, gradient and
pixel noise; note onsets, tempo, octave, loudness and background noise. The backdrop tint and
the base octave and noise level are drawn per *group* (like UCF101's groups of clips sharing a
scene), and test videos use other groups than train videos.

Untrimmed clips (``synth.untrimmed``) show and sound their class only inside one annotated
span (``Annotations.txt``, AVE's layout); elsewhere a distractor motion shared by every class
(:data:`DISTRACTOR`) and noise.

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

from maivar_tf.data.synthetic.dataset import (
    ANNOTATIONS_NAME,
    CLIPS_PER_GROUP,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SPAN_DECIMALS,
    ClipSpan,
    class_names,
    clip_spans,
    generate_dataset,
)
from maivar_tf.data.synthetic.motion import (
    DISTRACTOR,
    MOTIONS,
    SHUTTER_SAMPLES,
    motion_coverage,
    render_untrimmed_video,
    render_video,
)
from maivar_tf.data.synthetic.mp4 import rgb_to_yuv420p, write_mp4
from maivar_tf.data.synthetic.sound import (
    SOUND_PITCH_CLASSES,
    SOUNDS,
    render_audio,
    render_untrimmed_audio,
)

__all__ = [
    "ANNOTATIONS_NAME",
    "CLIPS_PER_GROUP",
    "DISTRACTOR",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "MOTIONS",
    "SHUTTER_SAMPLES",
    "SOUNDS",
    "SOUND_PITCH_CLASSES",
    "SPAN_DECIMALS",
    "ClipSpan",
    "class_names",
    "clip_spans",
    "generate_dataset",
    "motion_coverage",
    "render_audio",
    "render_untrimmed_audio",
    "render_untrimmed_video",
    "render_video",
    "rgb_to_yuv420p",
    "write_mp4",
]
