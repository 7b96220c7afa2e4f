"""Evaluation: metrics against hand-computed values, exact per-stage metrics, report artefacts.

``feature_set`` and ``heads`` (tiny heads on a 4-class toy FeatureSet) are shared with
tests/test_experiments.py.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from maivar_tf.evaluation import (
    classification_metrics,
    confusion_matrix,
    evaluate_arrays,
    mean_class_accuracy,
    per_class_accuracy,
    predictions,
    top_k_accuracy,
)

# ----------------------------------------------------------------------------- pure metrics

# 3 classes, 7 examples. Hand-computed:
#   true: 0 0 0 1 1 2 2
#   pred: 0 1 0 1 2 2 0
#   cm = [[2,1,0],[0,1,1],[1,0,1]]; top-1 = 4/7; per-class = [2/3, 1/2, 1/2];
#   mean class accuracy = (2/3 + 1/2 + 1/2) / 3 = 5/9.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2])
SCORES = np.array([
    [0.9, 0.05, 0.05],  # pred 0
    [0.2, 0.7, 0.1],    # pred 1
    [0.5, 0.3, 0.2],    # pred 0
    [0.1, 0.8, 0.1],    # pred 1
    [0.1, 0.3, 0.6],    # pred 2
    [0.0, 0.1, 0.9],    # pred 2
    [0.6, 0.1, 0.3],    # pred 0
])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(LABELS, predictions(SCORES), 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [1, 0, 1]])
    np.testing.assert_array_equal(cm, sk_confusion_matrix(LABELS, predictions(SCORES)))
    assert cm.dtype == np.int64


def test_top1_per_class_and_mean_class_accuracy_by_hand():
    cm = confusion_matrix(LABELS, predictions(SCORES), 3)
    assert top_k_accuracy(LABELS, SCORES, 1) == pytest.approx(4 / 7)
    np.testing.assert_allclose(per_class_accuracy(cm), [2 / 3, 1 / 2, 1 / 2])
    assert mean_class_accuracy(cm) == pytest.approx(5 / 9)
    assert mean_class_accuracy(cm) == pytest.approx(
        balanced_accuracy_score(LABELS, predictions(SCORES)))


def test_top2_by_hand():
    # Second choices: row1 -> 0 (hit), row4 -> 1 (hit), row6 -> 2 (hit): all 7 hit at k=2.
    assert top_k_accuracy(LABELS, SCORES, 2) == pytest.approx(7 / 7)
    # k >= C is always 1.0
    assert top_k_accuracy(LABELS, SCORES, 5) == 1.0


def test_top_k_with_ties_ranks_lower_class_index_first():
    # 6 classes. Row 0: classes 0..5 all tie -> ranking 0,1,2,3,4,5.
    # Row 1: class 5 highest, then 1 and 3 tie (1 first), then the rest tie (0, 2, 4).
    scores = np.array([
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [0.0, 2.0, 0.0, 2.0, 0.0, 3.0],
    ])
    # Row 0 label 5: rank 6 -> miss at top-5; label 4: rank 5 -> hit at top-5, miss at top-1.
    assert top_k_accuracy([5, 3], scores, 5) == pytest.approx(1 / 2)   # row1 label 3: rank 3
    # Row 1 ranks 5, 1, 3, 0, 2, 4: label 2 is 5th (hit at top-5), label 4 is 6th (miss).
    assert top_k_accuracy([4, 2], scores, 5) == pytest.approx(2 / 2)
    assert top_k_accuracy([4, 4], scores, 5) == pytest.approx(1 / 2)
    assert top_k_accuracy([0, 1], scores, 1) == pytest.approx(1 / 2)   # row1 top-1 is 5
    assert top_k_accuracy([0, 1], scores, 2) == pytest.approx(2 / 2)   # 1 beats 3 on the tie
    assert top_k_accuracy([0, 3], scores, 2) == pytest.approx(1 / 2)   # 3 loses the tie
    # A constant model: top-1 is the share of class 0, never 100%.
    assert top_k_accuracy([0, 1, 2, 3], np.zeros((4, 6)), 1) == pytest.approx(1 / 4)
    # Top-1 agrees with argmax (and therefore the confusion matrix) on ties.
    np.testing.assert_array_equal(predictions(scores), [0, 5])


def test_mean_class_accuracy_ignores_absent_classes_like_sklearn():
    labels = np.array([0, 0, 1, 1, 1, 3])
    preds = np.array([0, 1, 1, 1, 0, 3])
    cm = confusion_matrix(labels, preds, 4)  # class 2 has no examples
    pca = per_class_accuracy(cm)
    assert np.isnan(pca[2])
    np.testing.assert_allclose(pca[[0, 1, 3]], [1 / 2, 2 / 3, 1.0])
    assert mean_class_accuracy(cm) == pytest.approx(balanced_accuracy_score(labels, preds))


def test_metrics_reject_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="scores must be"):
        top_k_accuracy([0, 1], np.zeros((3, 2)), 1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        top_k_accuracy([0, 2], np.zeros((2, 2)), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy([0], np.zeros((1, 2)), 0)
    with pytest.raises(ValueError, match="predictions must lie"):
        confusion_matrix([0], [3], 3)


def test_classification_metrics_report():
    m = classification_metrics(LABELS, SCORES, ("a", "b", "c"))
    assert m["num_examples"] == 7
    assert m["top1"] == pytest.approx(4 / 7)
    assert m["top5"] == 1.0
    assert m["mean_class_accuracy"] == pytest.approx(5 / 9)
    assert m["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 0.5})
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    json.dumps(m)  # serialisable
    with pytest.raises(ValueError, match="3 classes but 2 class names"):
        classification_metrics(LABELS, SCORES, ("a", "b"))


# ----------------------------------------------------------------------------- models


def feature_set(n_per_class=6, k=2, dv=8, da=6, seed=0, representation="chromagram",
                 signal=3.0):
    """4 classes = 2 'motions' (seen in video) x 2 'sounds' (heard in audio)."""
    from maivar_tf.features import FeatureSet

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n_per_class)
    n = len(labels)
    video = rng.normal(size=(n, k, dv)).astype(np.float32)
    audio = rng.normal(size=(n, da)).astype(np.float32)
    video[:, :, 0] += signal * (labels // 2)[:, None]
    audio[:, 0] += signal * (labels % 2)
    ids = np.array([f"id{i:03d}" for i in range(n)])
    return FeatureSet(ids=ids, video=video, audio=audio, labels=labels.astype(np.int64),
                      class_names=("m0_s0", "m0_s1", "m1_s0", "m1_s1"),
                      representation=representation)


def heads(fs):
    import keras

    from maivar_tf.config import ModelConfig
    from maivar_tf.models.heads import build_audio_mlp, build_fusion_mlp, build_video_mlp

    keras.utils.set_random_seed(0)
    mc = ModelConfig(hidden_units=16, dropout=0.0, audio_rows_init="glorot_uniform")
    vmlp = build_video_mlp(4, fs.video.shape[1], mc, feature_dim=fs.video.shape[2])
    amlp = build_audio_mlp(4, mc, feature_dim=fs.audio.shape[1])
    fusion = build_fusion_mlp(vmlp, mc, audio_dim=fs.audio.shape[1])
    return {"video": vmlp, "audio": amlp, "fusion": fusion}


def test_evaluate_models_writes_report_plots_and_exact_metrics(tmp_path):
    from PIL import Image

    from maivar_tf.evaluation import embedding_kind, evaluate_models, hidden_activations

    fs = feature_set()
    models = heads(fs)
    assert {n: embedding_kind(m) for n, m in models.items()} == \
        {"video": "video", "audio": "audio", "fusion": "fused"}
    report = evaluate_models(models, fs, tmp_path / "eval")
    on_disk = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["num_examples"] == 24 and report["representation"] == "chromagram"
    assert report["class_names"] == list(fs.class_names)
    # Metrics equal those computed from the models' own logits.
    logits = {
        "video": np.asarray(models["video"](fs.video, training=False)),
        "audio": np.asarray(models["audio"](fs.audio, training=False)),
        "fusion": np.asarray(models["fusion"](
            {"video_features": fs.video, "audio_features": fs.audio}, training=False)),
    }
    for name, lg in logits.items():
        m = report["models"][name]
        assert m["top1"] == pytest.approx(np.mean(np.argmax(lg, 1) == fs.labels), abs=1e-9)
        assert m["confusion_matrix"] == sk_confusion_matrix(
            fs.labels, np.argmax(lg, 1), labels=range(4)).tolist()
        assert m["mean_class_accuracy"] == pytest.approx(
            balanced_accuracy_score(fs.labels, np.argmax(lg, 1)))
        png = tmp_path / "eval" / m["confusion_png"]
        assert png.name == f"confusion_{name}.png"
        assert Image.open(png).size[0] > 100
    assert report["tsne_embeddings"] == ["video", "audio", "fused"]
    assert report["tsne_points"] == 24
    w, h = Image.open(tmp_path / "eval" / report["tsne_png"]).size
    assert w > 2.5 * h  # three panels side by side
    # Embeddings are the hidden layers' activations.
    assert hidden_activations(models["video"], fs).shape == (24, 16)
    assert hidden_activations(models["fusion"], fs).shape == (24, 16)


def test_evaluate_arrays_is_exact_whatever_the_batch():
    fs = feature_set()
    fusion = heads(fs)["fusion"]
    x = {"video_features": fs.video, "audio_features": fs.audio}
    logits = np.asarray(fusion(x, training=False), np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    for batch_size in (5, 1024):  # a last partial batch counts its rows once
        m = evaluate_arrays(fusion, x, fs.labels, batch_size=batch_size)
        assert m["num_examples"] == 24
        assert m["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == fs.labels), abs=1e-12)
        assert m["cross_entropy"] == pytest.approx(-log_p[np.arange(24), fs.labels].mean(),
                                                   rel=1e-5)


def test_model_inputs_rejects_unknown_input():
    import keras

    from maivar_tf.evaluation import model_inputs

    inp = keras.Input((3,), name="pixels")
    model = keras.Model(inp, keras.layers.Dense(2)(inp), name="odd")
    with pytest.raises(ValueError, match=r"input\(s\) \['pixels'\]; allowed: video_features"):
        model_inputs(model, feature_set())


def test_the_report_gives_the_ece_before_and_after_the_runs_temperature(tmp_path):
    from PIL import Image

    from maivar_tf.calibration import expected_calibration_error, format_calibration
    from maivar_tf.evaluation import evaluate_models

    fs = feature_set()
    fusion = heads(fs)["fusion"]
    record = {"temperature": 2.5, "fitted": True, "num_examples": 16}
    report = evaluate_models({"fusion": fusion}, fs, tmp_path, tsne=False,
                             calibration={"fusion": record})
    c = report["calibration"]["fusion"]
    assert json.loads((tmp_path / "report.json").read_text())["calibration"]["fusion"] == c
    logits = np.asarray(fusion({"video_features": fs.video, "audio_features": fs.audio},
                               training=False), np.float64)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    assert c["temperature"] == 2.5 and c["bins"] == 15 and c["fitted_on"] == 16
    assert c["ece_before"] == pytest.approx(expected_calibration_error(softmax(logits),
                                                                       fs.labels), abs=1e-6)
    assert c["ece_after"] == pytest.approx(expected_calibration_error(softmax(logits / 2.5),
                                                                      fs.labels), abs=1e-6)
    assert c["ece_after"] != pytest.approx(c["ece_before"], abs=1e-3)
    png = tmp_path / c["reliability_png"]
    assert png.name == "reliability_fusion.png"
    with Image.open(png) as im:
        assert im.format == "PNG"
    text = format_calibration(report)
    assert f"before {100 * c['ece_before']:6.2f}%" in text
    assert f"after {100 * c['ece_after']:6.2f}%" in text
    assert "temperature 2.500, fitted on 16 validation examples" in text
    assert "calibration" not in evaluate_models({"fusion": fusion}, fs, tmp_path / "plain",
                                                tsne=False)


def test_tsne_of_identical_points_is_finite_at_the_origin():
    """Every clip's audio silent: the audio MLP's embeddings are one point, which t-SNE's
    gradient cannot place (NaN); they are drawn at the origin instead."""
    from maivar_tf.evaluation_plots import tsne_embed

    same = np.tile(np.linspace(-1.0, 2.0, 16), (12, 1))
    np.testing.assert_array_equal(tsne_embed(same), np.zeros((12, 2)))
    spread = tsne_embed(np.random.default_rng(0).normal(size=(12, 16)))
    assert np.isfinite(spread).all() and np.ptp(spread, axis=0).min() > 0
