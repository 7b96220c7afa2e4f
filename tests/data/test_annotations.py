"""Tests of the annotation readers on small files written to ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from maivar_tf.config import DataConfig
from maivar_tf.data.annotations import (
    KINETICS_SOUNDS_CLASSES,
    UCF51_CLASSES,
    Annotations,
    VideoRecord,
    make_example_id,
    read_annotations,
    read_generic_csv,
    read_kinetics_csv,
    read_ucf51,
    read_ucf101,
)

# A 6-class stand-in for UCF101's classInd.txt: two UCF51 classes, the HandstandPushups case,
# and classes without sound (Basketball, Biking are UCF50 classes).
CLASSES = ["ApplyEyeMakeup", "Basketball", "Biking", "HandstandPushups", "PlayingDaf", "YoYo"]


def _write(path: Path, text: str, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes(data.encode())
    return path


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


@pytest.fixture
def ucf_dir(tmp_path):
    ann = tmp_path / "ucfTrainTestlist"
    # UCF101's own files use CRLF line ends.
    _write(ann / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)),
           crlf=True)
    _write(ann / "trainlist01.txt",
           "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
           "Basketball/v_Basketball_g08_c01.avi 2\n"
           "HandstandPushups/v_HandStandPushups_g08_c01.avi 4\n"
           "PlayingDaf/v_PlayingDaf_g09_c02.avi 5\n"
           "\n"
           "YoYo/v_YoYo_g10_c01.avi 6\n", crlf=True)
    _write(ann / "testlist01.txt",
           "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
           "Biking/v_Biking_g01_c01.avi\n"
           "HandstandPushups/v_HandStandPushups_g01_c01.avi\n"
           "NotAClass/v_NotAClass_g01_c01.avi\n", crlf=True)
    _write(ann / "trainlist02.txt", "YoYo/v_YoYo_g01_c01.avi 6\n")
    _write(ann / "testlist02.txt", "YoYo/v_YoYo_g10_c01.avi\n")
    return ann


def test_ucf101_split_parsing(ucf_dir):
    ann = read_ucf101(ucf_dir, split=1)
    assert isinstance(ann, Annotations)
    assert ann.class_names == tuple(CLASSES)
    assert all(isinstance(r, VideoRecord) for r in ann.records)
    train, test = ann.split("train"), ann.split("test")
    assert [r.path for r in train] == [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "Basketball/v_Basketball_g08_c01.avi",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi",
        "PlayingDaf/v_PlayingDaf_g09_c02.avi",
        "YoYo/v_YoYo_g10_c01.avi",
    ]
    # classInd is 1-based on disk, 0-based here
    assert [r.label_index for r in train] == [0, 1, 3, 4, 5]
    assert [r.label_string for r in train] == ["ApplyEyeMakeup", "Basketball",
                                                "HandstandPushups", "PlayingDaf", "YoYo"]
    # test lists have no label: it comes from the folder part
    assert [r.label_index for r in test] == [0, 2, 3, -1]
    assert test[-1].label_string == "NotAClass"  # unknown label kept, not dropped
    assert all(r.start_s == 0.0 and r.end_s == 0.0 for r in ann.records)
    # split 2 reads the other files; the parent folder of ucfTrainTestlist also works
    ann2 = read_ucf101(ucf_dir.parent, split=2)
    assert [(r.path, r.split) for r in ann2.records] == [("YoYo/v_YoYo_g01_c01.avi", "train"),
                                                         ("YoYo/v_YoYo_g10_c01.avi", "test")]


def test_ucf101_handstand_case_mismatch_resolved_on_disk(ucf_dir, tmp_path):
    root = tmp_path / "UCF-101"
    # the on-disk folder spells the class like the file names do
    _touch(root / "HandStandPushups" / "v_HandStandPushups_g08_c01.avi")
    _touch(root / "HandStandPushups" / "v_HandStandPushups_g01_c01.avi")
    _touch(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    ann = read_ucf101(ucf_dir, split=1, video_root=root)
    hs = [r for r in ann.records if r.label_string == "HandstandPushups"]
    assert [r.path for r in hs] == ["HandStandPushups/v_HandStandPushups_g08_c01.avi",
                                    "HandStandPushups/v_HandStandPushups_g01_c01.avi"]
    assert all((root / r.path).is_file() for r in hs)
    assert all(r.label_index == 3 for r in hs)
    # a video absent from disk keeps its listed path (the Beam job reports it as missing)
    yoyo = [r for r in ann.records if r.label_string == "YoYo"][0]
    assert yoyo.path == "YoYo/v_YoYo_g10_c01.avi"
    # ids do not depend on the disk spelling
    assert hs[0].example_id == read_ucf101(ucf_dir, 1).records[2].example_id


def test_ucf51_subset_filtering_and_renumbering(ucf_dir):
    assert len(UCF51_CLASSES) == 51 and len(set(UCF51_CLASSES)) == 51
    assert UCF51_CLASSES[0] == "ApplyEyeMakeup" and "HandstandPushups" in UCF51_CLASSES
    assert not {"Basketball", "Biking", "YoYo", "PlayingGuitar"} & set(UCF51_CLASSES)
    assert list(UCF51_CLASSES) == sorted(UCF51_CLASSES, key=str.lower)  # classInd order

    ann = read_ucf101(ucf_dir, split=1, classes=["PlayingDaf", "ApplyEyeMakeup",
                                                  "HandstandPushups"])
    # renumbered 0..n-1 in classInd order, not in the order asked for
    assert ann.class_names == ("ApplyEyeMakeup", "HandstandPushups", "PlayingDaf")
    got = [(r.split, r.label_string, r.label_index) for r in ann.records]
    assert got == [("train", "ApplyEyeMakeup", 0), ("train", "HandstandPushups", 1),
                   ("train", "PlayingDaf", 2), ("test", "ApplyEyeMakeup", 0),
                   ("test", "HandstandPushups", 1), ("test", "NotAClass", -1)]

    # read_ucf51 needs all 51 classes in classInd; the 6-class file lacks most of them
    with pytest.raises(ValueError, match="not in .*classInd.txt"):
        read_ucf51(ucf_dir, split=1)


def test_ucf51_on_full_class_ind(tmp_path):
    names = list(UCF51_CLASSES) + ["Basketball", "YoYo", "Biking"]
    names.sort(key=str.lower)
    ann_dir = tmp_path / "ann"
    _write(ann_dir / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(names, 1)))
    _write(ann_dir / "trainlist01.txt", "YoYo/v_YoYo_g08_c01.avi 54\n"
           "WritingOnBoard/v_WritingOnBoard_g08_c01.avi 53\n"
           f"Basketball/v_Basketball_g08_c01.avi {names.index('Basketball') + 1}\n")
    _write(ann_dir / "testlist01.txt", "Archery/v_Archery_g01_c01.avi\n")
    ann = read_ucf51(ann_dir, split=1)
    assert ann.class_names == UCF51_CLASSES
    assert [(r.label_string, r.label_index) for r in ann.records] == [
        ("WritingOnBoard", 50), ("Archery", 2)]


def test_ucf101_malformed_lines_name_file_and_line(ucf_dir):
    bad = ucf_dir.parent / "bad"
    _write(bad / "classInd.txt", "1 A\n2 B\nthree C\n")
    with pytest.raises(ValueError, match=r"classInd.txt:3: expected '<index> <ClassName>'"):
        read_ucf101(bad)
    _write(bad / "classInd.txt", "1 A\n3 B\n")
    with pytest.raises(ValueError, match="1..2"):
        read_ucf101(bad)
    _write(bad / "classInd.txt", "1 A\n2 B\n")
    _write(bad / "testlist01.txt", "A/v_A_g01_c01.avi\n")
    _write(bad / "trainlist01.txt", "A/v_A_g08_c01.avi 1\nA/v_A_g08_c02.avi one\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:2: label 'one' is not an integer"):
        read_ucf101(bad)
    _write(bad / "trainlist01.txt", "A/v_A_g08_c01.avi 1\n\nv_A_g08_c02.avi 1\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:3: expected a relative"):
        read_ucf101(bad)
    _write(bad / "trainlist01.txt", "A/v_A_g08_c01.avi\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: a train list line needs"):
        read_ucf101(bad)
    _write(bad / "trainlist01.txt", "A/v_A_g08_c01.avi 2\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: label 2 \(B\) disagrees"):
        read_ucf101(bad)
    _write(bad / "trainlist01.txt", "A/v_A_g01_c01.avi 1\n")
    with pytest.raises(ValueError, match=r"testlist01.txt:1: video .* listed twice"):
        read_ucf101(bad)
    with pytest.raises(FileNotFoundError, match="trainlist03.txt"):
        read_ucf101(bad, split=3)
    with pytest.raises(FileNotFoundError, match="classInd.txt"):
        read_ucf101(bad / "nowhere")


def _kinetics_csv(tmp_path: Path) -> Path:
    return _write(tmp_path / "k.csv",
                  "label,youtube_id,time_start,time_end,split,is_cc\n"
                  "playing bagpipes,aaaaaaaaaaa,10,20,train,0\n"
                  '"playing_bagpipes",bbbbbbbbbbb,0,10,train,0\n'
                  "bowling,ccccccccccc,5,15,val,0\n"
                  "juggling balls,ddddddddddd,1,11,train,0\n"
                  ",eeeeeeeeeee,30,40,test,0\n"
                  "tickling,fffffffffff,3,13,train,0\n")


def test_kinetics_sounds_class_list():
    assert len(KINETICS_SOUNDS_CLASSES) == 31 == len(set(KINETICS_SOUNDS_CLASSES))
    assert list(KINETICS_SOUNDS_CLASSES) == sorted(KINETICS_SOUNDS_CLASSES)
    assert {"playing bagpipes", "blowing out candles", "tapping pen"} <= set(
        KINETICS_SOUNDS_CLASSES)


def test_kinetics_csv_paths_and_labels(tmp_path):
    csv_path = _kinetics_csv(tmp_path)
    root = tmp_path / "kinetics"
    # canonical layout, label folder with spaces
    _touch(root / "train" / "playing bagpipes" / "aaaaaaaaaaa_000010_000020.mp4")
    # canonical layout, label folder with underscores
    _touch(root / "train" / "playing_bagpipes" / "bbbbbbbbbbb_000000_000010.mp4")
    # fallback: a trimmed clip under the label folder, but in another split's tree
    _touch(root / "train" / "bowling" / "ccccccccccc_000005_000015.mp4")
    # fallback: an untrimmed video under a label folder; another clip of it is not ours
    _touch(root / "raw" / "tickling" / "fffffffffff_000100_000110.mp4")
    _touch(root / "raw" / "tickling" / "fffffffffff.mp4")

    ann = read_kinetics_csv(csv_path, root, classes=KINETICS_SOUNDS_CLASSES)
    assert ann.class_names == KINETICS_SOUNDS_CLASSES
    by_id = {r.example_id: r for r in ann.records}
    # "juggling balls" is a Kinetics class outside Kinetics-Sounds: left out of the subset
    assert "ddddddddddd_000001_000011" not in by_id
    assert len(ann.records) == 5
    a = by_id["aaaaaaaaaaa_000010_000020"]
    assert (a.path, a.start_s, a.end_s) == (
        "train/playing bagpipes/aaaaaaaaaaa_000010_000020.mp4", 0.0, 0.0)
    assert a.label_index == KINETICS_SOUNDS_CLASSES.index("playing bagpipes")
    b = by_id["bbbbbbbbbbb_000000_000010"]
    assert b.path == "train/playing_bagpipes/bbbbbbbbbbb_000000_000010.mp4"
    assert b.label_string == "playing bagpipes" and b.label_index == a.label_index
    c = by_id["ccccccccccc_000005_000015"]
    assert (c.path, c.split, c.start_s, c.end_s) == (
        "train/bowling/ccccccccccc_000005_000015.mp4", "val", 0.0, 0.0)
    f = by_id["fffffffffff_000003_000013"]
    assert (f.path, f.start_s, f.end_s) == ("raw/tickling/fffffffffff.mp4", 3.0, 13.0)
    e = by_id["eeeeeeeeeee_000030_000040"]  # no label: unknown, kept
    assert (e.label_index, e.label_string, e.split) == (-1, "", "test")
    assert e.path == "test/eeeeeeeeeee_000030_000040.mp4"
    assert all((root / r.path).is_file() for r in ann.records if r.label_index >= 0)

    # keeping rows outside the class list: they become unknown labels
    kept = read_kinetics_csv(csv_path, root, classes=KINETICS_SOUNDS_CLASSES,
                             drop_unlisted=False)
    d = [r for r in kept.records if r.example_id.startswith("ddddddddddd")][0]
    assert (d.label_index, d.label_string) == (-1, "juggling balls")
    assert d.path == "train/juggling balls/ddddddddddd_000001_000011.mp4"  # canonical, missing

    # no class list: sorted unique labels, no disk look-up
    plain = read_kinetics_csv(csv_path)
    assert plain.class_names == ("bowling", "juggling balls", "playing bagpipes", "tickling")
    assert [r.label_index for r in plain.records] == [2, 2, 0, 1, -1, 3]
    assert [r.example_id for r in plain.records] == [r.example_id for r in kept.records]


def test_kinetics_csv_errors(tmp_path):
    p = _write(tmp_path / "bad.csv", "label,youtube_id,time_start,time_end,split\n"
               "bowling,aaaaaaaaaaa,ten,20,train\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: time_start 'ten' is not a number"):
        read_kinetics_csv(p)
    _write(p, "label,youtube_id,time_start,time_end,split\nbowling,aaaaaaaaaaa,0,10,dev\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: split 'dev'"):
        read_kinetics_csv(p)
    _write(p, "label,youtube_id,time_start\nbowling,aaaaaaaaaaa,0\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: header .* lacks column"):
        read_kinetics_csv(p)
    _write(p, "label,youtube_id,time_start,time_end,split\nbowling,a,0,10,train\n"
           "bowling,b,0,10\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: fewer fields"):
        read_kinetics_csv(p)
    _write(p, "label,youtube_id,time_start,time_end,split\nbowling,a,0,10,train\n"
           "singing,a,0,10,train\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: clip a 0-10 is listed twice"):
        read_kinetics_csv(p)


def test_generic_csv(tmp_path):
    p = _write(tmp_path / "g.csv", "path,label,split\n"
               "clips/b.mp4,dog,train\n"
               "clips/a.mp4,cat,test\n"
               "/abs/c.mp4,dog,val\n"
               "clips/d.mp4,,train\n")
    ann = read_generic_csv(p)
    assert ann.class_names == ("cat", "dog")
    assert [(r.path, r.label_index, r.split) for r in ann.records] == [
        ("clips/b.mp4", 1, "train"), ("clips/a.mp4", 0, "test"), ("/abs/c.mp4", 1, "val"),
        ("clips/d.mp4", -1, "train")]
    _write(p, "path,label,split\nclips/a.mp4,cat,train\n,cat,train\n")
    with pytest.raises(ValueError, match=r"g.csv:3: empty path"):
        read_generic_csv(p)
    _write(p, "path,label,split\nclips/a.mp4,cat,train\nclips/a.mp4,cat,test\n")
    with pytest.raises(ValueError, match=r"g.csv:3: .* listed twice"):
        read_generic_csv(p)
    _write(p, "path,label\nclips/a.mp4,cat\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_generic_csv(p)


def test_example_ids_stable_unique_order_independent(ucf_dir, tmp_path):
    assert make_example_id("A/v_A_g01_c01.avi") == "A/v_A_g01_c01.avi"
    assert make_example_id("./A\\v.avi") == "A/v.avi"
    assert make_example_id("x.mp4", 10, 20.5) == "x.mp4#t=10,20.5"
    assert make_example_id("x.mp4", 10, 20) != make_example_id("x.mp4", 10, 21)
    with pytest.raises(ValueError):
        make_example_id("")

    ann = read_ucf101(ucf_dir, 1)
    ids = [r.example_id for r in ann.records]
    assert len(set(ids)) == len(ids) and all(ids)
    # reversing the list files changes the order, never the ids
    for name in ("trainlist01.txt", "testlist01.txt"):
        lines = (ucf_dir / name).read_text().splitlines()
        _write(ucf_dir / name, "\n".join(reversed(lines)) + "\n")
    ann_rev = read_ucf101(ucf_dir, 1)
    assert {r.example_id: r for r in ann_rev.records} == {r.example_id: r for r in ann.records}
    assert [r.example_id for r in ann_rev.records] != ids


def test_read_annotations_dispatch(ucf_dir, tmp_path):
    ann = read_annotations(DataConfig(dataset="ucf101", annotations=str(ucf_dir),
                                      video_root=str(tmp_path / "videos")))
    assert ann.class_names == tuple(CLASSES)
    # synthetic: the annotation folder is the video root
    ann = read_annotations(DataConfig(dataset="synthetic", video_root=str(ucf_dir)))
    assert len(ann.records) == 9
    csv_path = _kinetics_csv(tmp_path)
    ann = read_annotations(DataConfig(dataset="kinetics_sounds", annotations=str(csv_path),
                                      video_root=str(tmp_path / "none")))
    assert ann.class_names == KINETICS_SOUNDS_CLASSES and len(ann.records) == 5
    with pytest.raises(ValueError, match="data.annotations"):
        read_annotations(DataConfig(dataset="csv"))


# ----------------------------------------------------------------------------- data.class_list


def _generic_with_stray_label(tmp_path: Path) -> Path:
    return _write(tmp_path / "g.csv", "path,label,split\n"
                  "clips/a.mp4,cat,train\n"
                  "clips/b.mp4,dog,test\n"
                  "clips/z.mp4,zzz_not_a_class,train\n"
                  "clips/c.mp4,cow,val\n")


def test_generic_csv_with_a_class_list(tmp_path):
    csv_path = _generic_with_stray_label(tmp_path)
    # '#' comments and blank lines are skipped; indices follow the list, not the sort order
    lst = _write(tmp_path / "classes.txt", "# my classes\ndog\n\ncow\ncat  \nbird\n")
    cfg = DataConfig(dataset="csv", annotations=str(csv_path), class_list=str(lst))
    ann = read_annotations(cfg)
    assert ann.class_names == ("dog", "cow", "cat", "bird")
    got = {r.path: (r.label_index, r.label_string) for r in ann.records}
    assert got == {"clips/a.mp4": (2, "cat"), "clips/b.mp4": (0, "dog"),
                   "clips/z.mp4": (-1, "zzz_not_a_class"), "clips/c.mp4": (1, "cow")}
    # without a list the stray label is a class of its own, as before
    derived = read_annotations(DataConfig(dataset="csv", annotations=str(csv_path)))
    assert derived.class_names == ("cat", "cow", "dog", "zzz_not_a_class")
    assert all(r.label_index >= 0 for r in derived.records)


def test_class_list_errors_name_the_field(tmp_path):
    from maivar_tf.config import ConfigError

    csv_path = _generic_with_stray_label(tmp_path)
    missing = DataConfig(dataset="csv", annotations=str(csv_path),
                         class_list=str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match=r"data.class_list: .*nope.txt: class-list file not "
                                          r"found"):
        read_annotations(missing)
    dup = _write(tmp_path / "dup.txt", "cat\ndog\n# x\ncat\n")
    with pytest.raises(ConfigError, match=r"data.class_list: .*dup.txt:4: duplicate class "
                                          r"name 'cat' \(first at line 1\)"):
        read_annotations(DataConfig(dataset="csv", annotations=str(csv_path),
                                    class_list=str(dup)))
    empty = _write(tmp_path / "empty.txt", "# nothing\n\n")
    with pytest.raises(ConfigError, match=r"data.class_list: .*empty.txt: no class names"):
        read_annotations(DataConfig(dataset="csv", annotations=str(csv_path),
                                    class_list=str(empty)))
    with pytest.raises(ConfigError, match=r"data.class_list: invalid value 3"):
        DataConfig(class_list=3)


def test_kinetics_sounds_27_class_list_restricts_to_those(tmp_path):
    csv_path = _kinetics_csv(tmp_path)
    # a 27-class list (the paper's count): the 31 shipped ones less tap dancing, tapping
    # guitar, tapping pen and tickling
    paper = KINETICS_SOUNDS_CLASSES[:27]
    assert "tickling" not in paper and len(paper) == 27
    lst = _write(tmp_path / "ks27.txt", "# 27 classes\n" + "\n".join(paper) + "\n")
    default = read_annotations(DataConfig(dataset="kinetics_sounds", annotations=str(csv_path),
                                          video_root=str(tmp_path / "none")))
    assert default.class_names == KINETICS_SOUNDS_CLASSES  # the shipped 31 stay the default
    assert "tickling" in {r.label_string for r in default.records}
    ann = read_annotations(DataConfig(dataset="kinetics_sounds", annotations=str(csv_path),
                                      video_root=str(tmp_path / "none"), class_list=str(lst)))
    assert ann.class_names == paper
    labels = [(r.label_string, r.label_index) for r in ann.records]
    assert labels == [("playing bagpipes", paper.index("playing bagpipes"))] * 2 + [
        ("bowling", paper.index("bowling")), ("", -1)]


def test_class_list_source_says_where_the_classes_come_from(tmp_path):
    from maivar_tf.config import DataConfig
    from maivar_tf.data.annotations import class_list_source

    listed = tmp_path / "classes.txt"
    listed.write_text("a\nb\n")
    assert class_list_source(DataConfig(dataset="csv", class_list=str(listed))) == \
        f"from data.class_list {listed}"
    assert class_list_source(DataConfig(dataset="ucf51")) == "the shipped ucf51 list"
    assert class_list_source(DataConfig(dataset="kinetics_sounds")) == \
        "the shipped kinetics_sounds list"
    assert class_list_source(DataConfig(dataset="csv")).startswith("derived from the CSV's labels")
    assert class_list_source(DataConfig(dataset="ucf101")) == "from classInd.txt"
