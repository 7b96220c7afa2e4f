"""Generation of the embedded dataset: file layout, seeding, manifest and parallel writing.

Writes the UCF101 layout (``<Class>/v_<Class>_gNN_cNN.mp4`` plus ``classInd.txt``,
``trainlist01.txt``, ``testlist01.txt``) that MAiVAR's UCF51 experiments (Shaikh et al. 2024)
read, so the embedded dataset goes through the very readers and decoders real data does.
Every video's random streams are seeded from ``(cfg.seed, motion, sound, group, clip)``;
``synth_manifest.json`` records the config, so generation is idempotent and deterministic.

With ``synth.untrimmed`` each clip gets one span (:func:`clip_spans`, drawn from the clip's
own span stream): the class's motion fills it, its sound fills the span moved by up to
``sound_lag`` seconds at each end, and the rest is the shared distractor motion and noise.
The spans are written to ``Annotations.txt`` in AVE's layout
(``Category&VideoID&Quality&StartTime&EndTime``, VideoID the clip's path without extension,
times in seconds with 2 decimals, the motion's span), which the ``synthetic`` reader attaches
to the UCF-list records (:func:`maivar_tf.data.annotations.attach_spans`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maivar_tf.config import SynthConfig
from maivar_tf.data.synthetic.motion import MOTIONS, render_untrimmed_video, render_video
from maivar_tf.data.synthetic.mp4 import write_mp4
from maivar_tf.data.synthetic.sound import SOUNDS, render_audio, render_untrimmed_audio

__all__ = ["ANNOTATIONS_NAME", "CLIPS_PER_GROUP", "GENERATOR_VERSION", "MANIFEST_NAME",
           "SPAN_DECIMALS", "ClipSpan", "class_names", "clip_spans", "generate_dataset"]

#: Bump whenever rendering changes, so existing datasets are regenerated. (The untrimmed
#: variant left the trimmed files byte-identical, so it kept version 2.)
GENERATOR_VERSION = 2
#: The span annotations of an untrimmed dataset (AVE's layout).
ANNOTATIONS_NAME = "Annotations.txt"
#: Config fields that only the untrimmed variant reads: a trimmed manifest without them (or
#: with other values) describes the same files.
_UNTRIMMED_FIELDS = ("untrimmed", "event_min", "event_max", "sound_lag")
#: Span times are written and used rounded to this many decimals (10 ms).
SPAN_DECIMALS = 2
MANIFEST_NAME = "synth_manifest.json"
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


def _streams(cfg: SynthConfig, v: _Video) -> tuple[np.random.Generator, ...]:
    """(video group, video clip, audio group, audio clip, span) random streams of one video.

    The span stream is the clip seed's third child, so the first four are those of the
    trimmed dataset whether or not it is drawn from.
    """
    group = np.random.SeedSequence([cfg.seed, v.motion, v.sound, v.group])
    clip = np.random.SeedSequence([cfg.seed, v.motion, v.sound, v.group, v.clip])
    vg, ag = group.spawn(2)
    vc, ac, ec = clip.spawn(3)
    return tuple(np.random.default_rng(s) for s in (vg, vc, ag, ac, ec))


@dataclass(frozen=True)
class ClipSpan:
    """One untrimmed clip's span (seconds from the file start, :data:`SPAN_DECIMALS` decimals).

    Args:
        start_s, end_s: the class's motion (the annotated span, ``Annotations.txt``).
        sound_start_s, sound_end_s: the class's sound: the span with each end moved by up to
            ``synth.sound_lag`` seconds (uniform, either sign), clipped to the clip.
    """

    start_s: float
    end_s: float
    sound_start_s: float
    sound_end_s: float


def _draw_span(rng: np.random.Generator, cfg: SynthConfig) -> ClipSpan:
    """A span of ``event_min..event_max`` of the clip at a random start, and its sound span."""
    def rounded(x: float) -> float:
        return round(min(max(float(x), 0.0), cfg.seconds), SPAN_DECIMALS)

    length = rng.uniform(cfg.event_min, cfg.event_max) * cfg.seconds
    start = rounded(rng.uniform(0.0, cfg.seconds - length))
    end = rounded(start + length)
    lag = cfg.sound_lag
    s0 = rounded(start + rng.uniform(-lag, lag))
    s1 = rounded(end + rng.uniform(-lag, lag))
    if s1 <= s0:  # a lag larger than the span: keep a sound of at least 10 ms
        s0, s1 = min(s0, rounded(cfg.seconds - 0.01)), max(s1, rounded(s0 + 0.01))
    return ClipSpan(start, end, s0, s1)


def clip_spans(cfg: SynthConfig) -> dict[str, ClipSpan]:
    """Every untrimmed clip's span, by relative path (what ``Annotations.txt`` holds).

    Args:
        cfg: the dataset config (``untrimmed`` need not be set: the spans it would use).
    """
    return {v.rel_path: _draw_span(_streams(cfg, v)[4], cfg) for v in _videos(cfg)}


def _write_text_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _manifest(cfg: SynthConfig, videos: list[_Video]) -> dict:
    out = {"generator": "maivar_tf.data.synthetic", "version": GENERATOR_VERSION,
           "config": dataclasses.asdict(cfg), "class_names": list(class_names(cfg)),
           "files": [v.rel_path for v in videos]}
    if cfg.untrimmed:
        out["spans"] = {rel: dataclasses.asdict(span) for rel, span in clip_spans(cfg).items()}
    return out


def _files_config(config: dict | None) -> dict | None:
    """A manifest's config as far as it shapes the files (trimmed: no untrimmed fields)."""
    if not isinstance(config, dict) or config.get("untrimmed"):
        return config
    return {k: v for k, v in config.items() if k not in _UNTRIMMED_FIELDS}


def _same_files(old: dict | None, new: dict) -> bool:
    return (bool(old) and old.get("version") == new["version"]
            and _files_config(old.get("config")) == _files_config(new["config"]))


def _annotations_text(cfg: SynthConfig, videos: list[_Video]) -> str:
    from maivar_tf.data.annotations import AVE_HEADER

    spans = clip_spans(cfg)
    fmt = f"{{:.{SPAN_DECIMALS}f}}"
    return AVE_HEADER + "\n" + "".join(
        f"{v.class_name}&{v.rel_path.rsplit('.', 1)[0]}&good&"
        f"{fmt.format(spans[v.rel_path].start_s)}&{fmt.format(spans[v.rel_path].end_s)}\n"
        for v in videos)


def _make_video(cfg: SynthConfig, v: _Video, dest: str) -> str:
    """Renders and writes one video (a module-level function, so worker processes can run it)."""
    vg, vc, ag, ac, ec = _streams(cfg, v)
    if cfg.untrimmed:
        span = _draw_span(ec, cfg)
        frames = render_untrimmed_video(v.motion, vg, vc, ec, cfg, (span.start_s, span.end_s))
        wave = render_untrimmed_audio(v.sound, ag, ac, cfg, (span.sound_start_s,
                                                             span.sound_end_s))
    else:
        frames = render_video(v.motion, vg, vc, cfg)
        wave = render_audio(v.sound, ag, ac, cfg)
    dest_path = Path(dest)
    tmp = dest_path.with_name("." + dest_path.name + ".tmp")
    write_mp4(tmp, frames, cfg.fps, wave, cfg.audio_rate)
    os.replace(tmp, dest_path)
    return dest


def _run(jobs: list[tuple[_Video, Path]], cfg: SynthConfig, workers: int, progress: bool) -> None:
    from maivar_tf.console import progress as progress_bar

    bar = progress_bar(total=len(jobs), desc="synth videos", unit="video",
                       enabled=progress and bool(jobs))
    try:
        if workers <= 1 or len(jobs) < 2 * workers:  # too few videos to pay for the start-up
            for v, dest in jobs:
                _make_video(cfg, v, str(dest))
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
                bar.update()
    finally:
        bar.close()


def generate_dataset(out_dir: str | os.PathLike, cfg: SynthConfig, progress: bool = True,
                     workers: int | None = None) -> Path:
    """Generates the embedded dataset (idempotent and deterministic).

    Writes ``out_dir/<Class>/v_<Class>_gNN_cNN.mp4`` and, in UCF101 format, ``classInd.txt``,
    ``trainlist01.txt`` and ``testlist01.txt``, so ``read_ucf101(out_dir, 1, out_dir)`` reads
    it; with ``cfg.untrimmed`` also ``Annotations.txt`` (the spans, AVE's layout). ``synth_manifest.json`` records the config: with the same config, existing videos are
    kept untouched (the untrimmed-only fields do not matter for a trimmed config); with
    another config (or generator version) every video is rewritten and
    videos of the old manifest that the new config lacks are removed. Files are written under a
    temporary name and renamed, so an interrupted run never leaves a truncated video.

    Args:
        out_dir: the dataset folder (created if needed).
        cfg: the dataset config.
        progress: report progress (:func:`maivar_tf.console.progress`).
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
    same = _same_files(old, manifest)
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
    annotations = root / ANNOTATIONS_NAME
    if cfg.untrimmed:
        _write_text_if_changed(annotations, _annotations_text(cfg, videos))
    elif annotations.is_file() and (old or {}).get("config", {}).get("untrimmed"):
        annotations.unlink()  # an untrimmed dataset's spans no longer describe the files
    _write_text_if_changed(manifest_path, json.dumps({**manifest, "complete": True}, indent=1))
    return root
