"""The ``data`` section and its ``audio`` and ``synth`` sub-sections.

``data`` says which videos become TFRecords and how (K, frame size, audio-images, per-segment
audio-images, what to do with a clip without sound); ``audio`` how waveforms become
audio-images; ``synth`` the embedded dataset (trimmed, or untrimmed with an annotated span).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maivar_tf.config.checks import (
    COLORMAPS,
    DATASETS,
    MISSING_AUDIO,
    REPRESENTATIONS,
    ConfigError,
    check_choice,
    check_positive,
)


@dataclass(frozen=True)
class AudioImageConfig:
    """How waveforms become audio-images (the paper's Sec. 3.2).

    Args:
        sample_rate: every clip is resampled to this rate (Hz) after down-mixing to mono.
        max_seconds: clips are cut to this many seconds (0 keeps the whole clip).
        image_size: the square side of every audio-image (299 for InceptionResNetV2).
        n_fft: STFT window length in samples.
        hop_length: STFT hop in samples.
        n_mels: mel bands feeding the MFCC.
        n_mfcc: MFCC coefficients kept.
        n_chroma: chroma bins (tuning is fixed at 0.0, never estimated per clip).
        rolloff_percent: energy fraction of the spectral rolloff.
        top_db: dynamic range of the dB scale.
        colormap: matplotlib colormap sampled once into a 256-entry lookup table.
        segment_seconds: the audio window of each TSN segment's audio-image (``data.segment_audio``),
            centred on the segment's frame and moved inside the clip at its edges.
    """

    sample_rate: int = 22050
    max_seconds: float = 10.0
    image_size: int = 299
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    n_mfcc: int = 20
    n_chroma: int = 12
    rolloff_percent: float = 0.85
    top_db: float = 80.0
    colormap: str = "viridis"
    segment_seconds: float = 1.0

    def __post_init__(self) -> None:
        s = "audio"
        check_positive(s, "segment_seconds", self.segment_seconds)
        for name in ("sample_rate", "image_size", "n_fft", "hop_length", "n_mels", "n_mfcc",
                     "n_chroma"):
            check_positive(s, name, getattr(self, name))
        check_positive(s, "max_seconds", self.max_seconds, allow_zero=True)
        check_positive(s, "top_db", self.top_db)
        if not 0.0 < self.rolloff_percent < 1.0:
            raise ConfigError(
                f"{s}.rolloff_percent: invalid value {self.rolloff_percent!r}; "
                "allowed: a number in (0, 1)"
            )
        if self.hop_length > self.n_fft:
            raise ConfigError(f"{s}.hop_length: {self.hop_length} > n_fft {self.n_fft}; "
                              "allowed: hop_length <= n_fft")
        if self.n_mfcc > self.n_mels:
            raise ConfigError(f"{s}.n_mfcc: {self.n_mfcc} > n_mels {self.n_mels}; "
                              "allowed: n_mfcc <= n_mels")
        check_choice(s, "colormap", self.colormap, COLORMAPS)


@dataclass(frozen=True)
class SynthConfig:
    """The embedded audio-visual dataset (``maivar synth``).

    Classes cross ``num_motions`` kinds of object motion with ``num_sounds`` kinds of sound,
    so video alone tops out near ``1/num_sounds`` and audio alone near ``1/num_motions``.

    With ``untrimmed`` the class's motion and sound fill one span of each clip (a random start,
    ``event_min``..``event_max`` of its length; the sound starts and ends up to ``sound_lag``
    seconds before or after the motion) and the rest is background: a distractor motion shared
    by every class, and noise. The span is written to ``Annotations.txt`` (AVE's layout).
    """

    num_motions: int = 4
    num_sounds: int = 2
    train_per_class: int = 24
    test_per_class: int = 10
    seconds: float = 3.0
    fps: int = 15
    width: int = 160
    height: int = 120
    audio_rate: int = 22050
    seed: int = 0
    untrimmed: bool = False
    event_min: float = 0.3
    event_max: float = 0.6
    sound_lag: float = 0.25

    def __post_init__(self) -> None:
        s = "synth"
        if not 0.0 < self.event_min <= self.event_max <= 1.0:
            raise ConfigError(f"{s}.event_min/event_max: {self.event_min}/{self.event_max}; "
                              "allowed: 0 < event_min <= event_max <= 1")
        check_positive(s, "sound_lag", self.sound_lag, allow_zero=True)
        check_choice(s, "num_motions", self.num_motions, (1, 2, 3, 4))
        check_choice(s, "num_sounds", self.num_sounds, (1, 2, 3, 4))
        for name in ("train_per_class", "test_per_class", "seconds", "fps", "width", "height",
                     "audio_rate"):
            check_positive(s, name, getattr(self, name))
        if self.width % 2 or self.height % 2:
            raise ConfigError(f"{s}.width/height: {self.width}x{self.height}; allowed: even "
                              "numbers (H.264 with yuv420p needs them)")


@dataclass(frozen=True)
class DataConfig:
    """Which videos, and how they become TFRecords.

    Args:
        dataset: ``synthetic`` (embedded), ``ucf101``, ``ucf51``, ``kinetics_sounds``, ``csv`` or
            ``ave`` (AVE's ``Annotations.txt`` spans).
        video_root: folder holding the videos (for ``synthetic``, where they are generated).
        annotations: the annotation folder (UCF101 ``ucfTrainTestlist``) or CSV file;
            empty means ``video_root`` for UCF-style and synthetic data.
        split: the UCF101 train/test split number (1-3).
        class_list: a class-list file (one class name a line; blank lines and ``#`` comments
            skipped); label indices follow it, and a record whose label is not in it is an
            ``unknown_label`` dead letter. Empty: the shipped list of ``ucf51`` and
            ``kinetics_sounds`` (``maivar_tf/resources``), ``classInd.txt`` for ``ucf101`` and
            ``synthetic``, the sorted labels of a ``csv``. The file is read (and a missing
            one refused naming this field) when the annotations are read.
        output_dir: where TFRecord shards, ``dataset_info.json`` and ``failed-*.jsonl`` go.
        features_dir: where ``maivar extract`` writes feature shards and ``feature_info.json``.
        num_shards: shards per split (0: one per 256 videos of the split); each example's
            shard is a stable hash of its example id, so shards are byte-identical in every
            runner mode.
        num_segments: K, the TSN segments sampled per video (the paper tests with 25).
        frame_short_side: frames are resized so their shorter side is this many pixels.
        jpeg_quality: JPEG quality of stored frames.
        crop_size: the backbone input side (224 for BNInception).
        representations: which audio-images to render and store.
        store_waveform: also store the mono waveform (``WAVEFORM/feature/floats``).
        train_augment: random crops / flips in the training input pipeline.
        segment_audio: also store, per representation, the K audio-images of the segments'
            audio windows (``audio.segment_seconds`` long; ``<REP>_SEGMENTS/image/encoded``).
        on_missing_audio: a clip without an audio track is a ``no_audio`` dead letter
            (``reject``) or kept with silent audio and ``audio/missing`` set (``silence``).
    """

    dataset: str = "synthetic"
    video_root: str = "data/videos"
    annotations: str = ""
    split: int = 1
    class_list: str = ""
    output_dir: str = "data/tfrecords"
    features_dir: str = "data/features"
    num_shards: int = 2
    num_segments: int = 8
    frame_short_side: int = 256
    jpeg_quality: int = 90
    crop_size: int = 224
    representations: tuple[str, ...] = REPRESENTATIONS
    store_waveform: bool = False
    train_augment: bool = True
    segment_audio: bool = False
    on_missing_audio: str = "reject"
    audio: AudioImageConfig = field(default_factory=AudioImageConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        s = "data"
        check_choice(s, "dataset", self.dataset, DATASETS)
        check_choice(s, "split", self.split, (1, 2, 3))
        check_choice(s, "on_missing_audio", self.on_missing_audio, MISSING_AUDIO)
        if not isinstance(self.class_list, str):
            raise ConfigError(f"{s}.class_list: invalid value {self.class_list!r}; allowed: a "
                              "path to a class-list file, or '' for the dataset's default")
        check_positive(s, "num_shards", self.num_shards, allow_zero=True)
        for name in ("num_segments", "frame_short_side", "crop_size"):
            check_positive(s, name, getattr(self, name))
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"{s}.jpeg_quality: invalid value {self.jpeg_quality!r}; "
                              "allowed: 1..100")
        if self.crop_size > self.frame_short_side:
            raise ConfigError(f"{s}.crop_size: {self.crop_size} > frame_short_side "
                              f"{self.frame_short_side}; allowed: crop_size <= frame_short_side")
        reps = tuple(self.representations)
        object.__setattr__(self, "representations", reps)
        if not reps:
            raise ConfigError(f"{s}.representations: empty; allowed: any of "
                              f"{', '.join(REPRESENTATIONS)}")
        for r in reps:
            check_choice(s, "representations", r, REPRESENTATIONS)
        if len(set(reps)) != len(reps):
            raise ConfigError(f"{s}.representations: duplicates in {list(reps)}")

    def read_class_list(self) -> tuple[str, ...] | None:
        """The names in the ``class_list`` file, or None when it is empty (the default).

        Not checked in ``__post_init__``: a config stored with a run or an export is read back
        on machines that need not hold the file. The Beam job reads it first of all.

        Raises:
            ConfigError: naming ``data.class_list``: a missing file, no name, or a duplicate.
        """
        if not self.class_list:
            return None
        from maivar_tf.resources import read_class_list_file

        try:
            return read_class_list_file(self.class_list)
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.class_list: {e}") from e
