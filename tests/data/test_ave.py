"""Tests of the AVE annotation reader and of spans on the synthetic reader's records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from maivar_tf.config import DataConfig
from maivar_tf.data.annotations import (
    AVE_HEADER,
    VideoRecord,
    attach_spans,
    class_list_source,
    read_annotations,
    read_ave,
    read_ave_lines,
    read_ucf101,
)
from maivar_tf.data.clips import resolve_video_path

SPEECH = "Female speech, woman speaking"
AVE_CLIP = "ave_0lFf-HP86Q0_female_speech.mp4"

# AVE's exact layout: '&'-separated, a header in Annotations.txt only, CRLF line ends as the
# dataset ships them, integer seconds (and one fractional span, as the embedded data writes).
ANNOTATIONS = (f"{AVE_HEADER}\r\n"
               "Church bell&RUhOCu3LNXM&good&0&10\r\n"
               f"{SPEECH}&0lFf-HP86Q0&good&5&10\r\n"
               "Church bell&MH3m4AwEcRY&good&6&8\r\n"
               "Acoustic guitar&-2RPPODqLy4&good&1.25&7.50\r\n"
               "Church bell&MH3m4AwEcRY&good&0&2\r\n")
TRAIN = "Church bell&RUhOCu3LNXM&good&0&10\r\n" f"{SPEECH}&0lFf-HP86Q0&good&5&10\r\n"
TEST = "Church bell&MH3m4AwEcRY&good&6&8\r\nChurch bell&MH3m4AwEcRY&good&0&2\r\n"
VAL = "Acoustic guitar&-2RPPODqLy4&good&1.25&7.50\r\n"


def _write_ave(folder: Path, annotations: str = ANNOTATIONS, train: str = TRAIN,
               test: str = TEST, val: str | None = VAL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Annotations.txt").write_bytes(annotations.encode())
    (folder / "trainSet.txt").write_bytes(train.encode())
    (folder / "testSet.txt").write_bytes(test.encode())
    if val is not None:
        (folder / "valSet.txt").write_bytes(val.encode())
    return folder


def test_ave_reader_reads_categories_splits_and_spans(tmp_path, clips_dir):
    root = _write_ave(tmp_path / "AVE_Dataset")
    videos = root / "AVE"
    videos.mkdir()
    (videos / "0lFf-HP86Q0.mp4").symlink_to(clips_dir / AVE_CLIP)  # the real AVE clip
    cfg = DataConfig(dataset="ave", annotations=str(root), video_root=str(videos))
    ann = read_annotations(cfg)
    assert ann.class_names == ("Acoustic guitar", "Church bell", SPEECH)  # sorted unique
    assert [(r.path, r.split, r.label_index, r.label_string, r.spans) for r in ann.records] == [
        ("RUhOCu3LNXM.mp4", "train", 1, "Church bell", ((0.0, 10.0),)),
        ("0lFf-HP86Q0.mp4", "train", 2, SPEECH, ((5.0, 10.0),)),
        ("MH3m4AwEcRY.mp4", "test", 1, "Church bell", ((0.0, 2.0), (6.0, 8.0))),
        ("-2RPPODqLy4.mp4", "val", 0, "Acoustic guitar", ((1.25, 7.5),)),
    ]
    speech = ann.records[1]
    assert speech.example_id == "0lFf-HP86Q0.mp4"
    assert Path(resolve_video_path(speech.path, cfg.video_root)).resolve() == (
        clips_dir / AVE_CLIP).resolve()
    assert class_list_source(cfg) == "the sorted categories of Annotations.txt"
    # the Annotations.txt path itself works too; valSet.txt may be absent
    (root / "valSet.txt").unlink()
    assert len(read_ave(root / "Annotations.txt").records) == 3


def test_ave_reader_with_a_class_list_marks_other_categories_unknown(tmp_path):
    root = _write_ave(tmp_path / "a")
    classes = tmp_path / "classes.txt"
    classes.write_text(f"{SPEECH}\nChurch bell\n")
    ann = read_annotations(DataConfig(dataset="ave", annotations=str(root),
                                      class_list=str(classes)))
    assert ann.class_names == (SPEECH, "Church bell")
    assert [r.label_index for r in ann.records] == [1, 0, 1, -1]


@pytest.mark.parametrize("file,text,message", [
    ("Annotations.txt", f"{AVE_HEADER}\nChurch bell&RUhOCu3LNXM&good&0\n",
     "Annotations.txt:2: expected 5 '&'-separated fields"),
    ("Annotations.txt", f"{AVE_HEADER}\nChurch bell&RUhOCu3LNXM&good&zero&10\n",
     "Annotations.txt:2: StartTime 'zero' is not a number of seconds"),
    ("Annotations.txt", f"{AVE_HEADER}\nChurch bell&RUhOCu3LNXM&good&6&4\n",
     "Annotations.txt:2: EndTime 4 is not after StartTime 6"),
    ("Annotations.txt", f"{AVE_HEADER}\nChurch bell&RUhOCu3LNXM&good&-1&4\n",
     "Annotations.txt:2: StartTime '-1' must be a finite number >= 0"),
    ("Annotations.txt", f"{AVE_HEADER}\n&RUhOCu3LNXM&good&0&4\n",
     "Annotations.txt:2: empty Category or VideoID"),
    ("Annotations.txt", f"{AVE_HEADER}\nChurch bell&X&good&0&4\n\nDog&X&good&5&6\n",
     "Annotations.txt:4: video 'X' has category 'Dog' here but 'Church bell' at"),
    ("trainSet.txt", "Church bell&NOT_ANNOTATED&good&0&10\n",
     "trainSet.txt:1: video 'NOT_ANNOTATED' is not in"),
    ("trainSet.txt", "Dog&RUhOCu3LNXM&good&0&10\n",
     "trainSet.txt:1: category 'Dog' disagrees with 'Church bell' at"),
    ("testSet.txt", "Church bell&RUhOCu3LNXM&good&0&10\n",
     "testSet.txt:1: video 'RUhOCu3LNXM' is already in another split"),
])
def test_ave_malformed_lines_name_file_and_line(tmp_path, file, text, message):
    root = _write_ave(tmp_path / "a")
    (root / file).write_text(text)
    with pytest.raises(ValueError, match=message):
        read_ave(root)


def test_ave_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Annotations.txt: missing"):
        read_ave(tmp_path)
    root = _write_ave(tmp_path / "a")
    (root / "testSet.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testSet.txt: missing"):
        read_ave(root)


def test_read_ave_lines_skips_only_a_leading_header(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text(f"\ufeff{AVE_HEADER}\nChurch bell&A&good&0&10\n")  # BOM tolerated
    lines = read_ave_lines(path)
    assert [(ln.category, ln.video_id, ln.quality, ln.start_s, ln.end_s) for ln in lines] == [
        ("Church bell", "A", "good", 0.0, 10.0)]
    assert lines[0].where == f"{path}:2"
    path.write_text(f"Church bell&A&good&0&10\n{AVE_HEADER}\n")
    with pytest.raises(ValueError, match=r"x.txt:2: StartTime .StartTime. is not a number"):
        read_ave_lines(path)


def _ucf(folder: Path) -> Path:
    folder.mkdir()
    (folder / "classInd.txt").write_text("1 Slide_Chime\n2 Bounce_Pluck\n")
    (folder / "trainlist01.txt").write_text("Slide_Chime/v_Slide_Chime_g03_c01.mp4 1\n")
    (folder / "testlist01.txt").write_text("Bounce_Pluck/v_Bounce_Pluck_g01_c01.mp4\n")
    return folder


def test_synthetic_reader_attaches_each_videos_span(tmp_path):
    root = _ucf(tmp_path / "v")
    cfg = DataConfig(dataset="synthetic", video_root=str(root))
    assert all(r.spans == () for r in read_annotations(cfg).records)  # trimmed: no file
    (root / "Annotations.txt").write_text(
        f"{AVE_HEADER}\nBounce_Pluck&Bounce_Pluck/v_Bounce_Pluck_g01_c01&good&0.12&2.88\n"
        "Slide_Chime&Slide_Chime/v_Slide_Chime_g03_c01&good&2.40&6.10\n")
    ann = read_annotations(cfg)
    assert [(r.path, r.spans) for r in ann.records] == [
        ("Slide_Chime/v_Slide_Chime_g03_c01.mp4", ((2.4, 6.1),)),
        ("Bounce_Pluck/v_Bounce_Pluck_g01_c01.mp4", ((0.12, 2.88),))]
    # a span file that misses a video, or names another class, is an error naming it
    (root / "Annotations.txt").write_text(
        f"{AVE_HEADER}\nBounce_Pluck&Slide_Chime/v_Slide_Chime_g03_c01&good&1&2\n")
    with pytest.raises(ValueError, match=r"Annotations.txt:2: category 'Bounce_Pluck' "
                                         "disagrees with the video's class 'Slide_Chime'"):
        read_annotations(cfg)
    with pytest.raises(ValueError, match="no span for video 'Bounce_Pluck/v_Bounce_Pluck_g01"):
        attach_spans(read_ucf101(root, 1, root), _only_first(root))


def _only_first(root: Path) -> Path:
    path = root / "first.txt"
    path.write_text(f"{AVE_HEADER}\nSlide_Chime&Slide_Chime/v_Slide_Chime_g03_c01&good&1&2\n")
    return path


def test_video_record_spans_are_float_tuples_and_survive_a_dict_round_trip():
    r = VideoRecord("a.mp4", 0, "a", "train", spans=[[1, 2.5]])
    assert r.spans == ((1.0, 2.5),)
    assert VideoRecord(**dataclasses.asdict(r)) == r
