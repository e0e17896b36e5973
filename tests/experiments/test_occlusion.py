"""``zfnet occlusion``: the JSON matches the algorithm, figures load, the pointing game adds up, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.runs import synthetic_run
from PIL import Image

from zfnet.analysis.occlusion import occlusion
from zfnet.cli import main
from zfnet.data.annotations import map_box
from zfnet.data.transforms import center_crop, load_image
from zfnet.experiments.occlusion import Config, default_window, pointing_game, run
from zfnet.train.run import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    """Synthetic data (3 classes, 64 px, with boxes) and a zfnet-tiny run directory written directly."""
    return synthetic_run(tmp_path_factory.mktemp("occlusion"), classes=3, val_per_class=3)


def occlusion_job(run_dir, out, *, images=(), n_images=None, pointing=None, **options):
    """The occlusion experiment on a run directory, as the command line runs it."""
    extra = {"images": n_images} if n_images is not None else {}
    config = Config(run=str(run_dir), image=tuple(str(p) for p in images), pointing_game=pointing, **extra, **options)
    return run(config, out)


def test_default_window_is_the_papers_in_proportion():
    assert default_window(224) == (32, 8)
    assert default_window(64) == (9, 2)


def test_job_records_what_the_algorithm_computes(synth_run, tmp_path):
    data, run = synth_run
    out = tmp_path / "occ"
    result = occlusion_job(run, out, data=data, n_images=3, window=16, stride=8)
    loaded = load_run(run)
    assert len(result["images"]) == 3
    annotations = json.loads((data / "annotations.json").read_text())
    for record in result["images"]:
        path = data / record["image"]
        img = load_image(path, loaded.base_size)
        x = center_crop(img[None].float() - loaded.mean, loaded.input_size)[0]
        label = loaded.classes.index(path.parent.name)
        expected = occlusion(loaded.model, x, label, 16, 8)
        assert record["target"] == label and record["label"] == loaded.classes[label]
        torch.testing.assert_close(torch.tensor(record["prob_true"]), expected.prob_true, atol=1e-5, rtol=0)
        assert record["top_class"] == expected.top_class.tolist()
        assert record["channel"] == expected.channel
        box = map_box(annotations["images"][record["image"]]["box"], (64, 64), loaded.base_size, loaded.input_size)
        assert record["box"] == box
        r, c = expected.most_sensitive()
        assert record["most_sensitive"] == [r, c]
        assert record["most_sensitive_in_box"] == (box[0] <= c < box[2] and box[1] <= r < box[3])
        figure = Image.open(out / record["figure"])
        figure.load()
        assert figure.width > 600
    saved = json.loads((out / "occlusion.json").read_text())
    assert saved["kind"] == "occlusion" and saved["report"]["figures"][0]["path"] == "occlusion-000.png"
    assert len(saved["report"]["tables"][0]["rows"]) == 3


def test_pointing_game_counts(synth_run):
    data, run = synth_run
    game = pointing_game(load_run(run), data, window=16, stride=8, show_progress=False)
    assert game["images"] + game["skipped_wrong"] == 9  # 3 classes x 3 validation images, all with boxes
    assert len(game["distances"]) == game["images"] and game["tolerance"] == round(15 * 64 / 224)
    assert game["hits"] == sum(d <= game["tolerance"] for d in game["distances"])
    assert game["strict_hits"] == sum(d == 0 for d in game["distances"]) <= game["hits"]
    if game["images"]:
        assert game["fraction"] == game["hits"] / game["images"]


def test_distance_to_a_box():
    from zfnet.experiments.occlusion import _distance

    box = [10, 20, 30, 40]  # x0, y0, x1, y1 (exclusive ends): columns 10..29, rows 20..39
    assert _distance((20, 10), box) == 0.0 and _distance((39, 29), box) == 0.0
    assert _distance((40, 29), box) == 1.0  # one row below
    assert _distance((17, 6), box) == 5.0  # 3 rows above, 4 columns left


def test_given_image_files_and_target_by_name(synth_run, tmp_path):
    data, run = synth_run
    image = sorted((data / "val").rglob("*.png"))[0]
    loaded = load_run(run)
    other = loaded.classes[-1]
    result = occlusion_job(run, tmp_path, images=[image], target=other, window=16, stride=16)
    record = result["images"][0]
    assert record["target_name"] == other and record["label"] == image.parent.name
    assert record["box"] is not None  # found through the data folder's annotations.json


def test_cli(synth_run, tmp_path, capsys):
    data, run = synth_run
    out = tmp_path / "cli"
    assert main(["occlusion", str(run), "--data", str(data), "--out", str(out), "--images", "2", "--window", "16",
                 "--stride", "8", "--pointing-game", "3"]) == 0
    text = capsys.readouterr().out
    assert f"results in {out}" in text
    saved = json.loads((out / "occlusion.json").read_text())
    game = saved["pointing_game"]
    assert game["images"] + game["skipped_wrong"] == 3 and (game["images"] == 0 or "pointing game:" in text)
    assert len(saved["images"]) == 2 and (out / "occlusion-001.png").is_file()


def test_cli_coarse_mode_records_its_ssim(synth_run, tmp_path, capsys):
    data, run = synth_run
    out = tmp_path / "coarse"
    assert main(["occlusion", str(run), "--data", str(data), "--out", str(out), "--images", "1", "--window", "16",
                 "--stride", "4", "--mode", "coarse", "--tol", "0"]) == 0
    saved = json.loads((out / "occlusion.json").read_text())
    assert saved["mode"] == "coarse"
    assert saved["images"][0]["ssim"] == pytest.approx(1.0)  # tol 0 drills down wherever neighbours differ


@pytest.mark.parametrize("extra,message", [
    (["--image", "missing.png"], "image missing.png does not exist"),
    (["--data", "{data}", "--target", "unicorn"], "unknown class 'unicorn'"),
    (["--data", "{data}", "--layer", "conv9"], "unknown layer 'conv9'"),
    (["--data", "{data}", "--window", "500"], "larger than the model's input"),
])
def test_cli_errors_are_one_line(synth_run, tmp_path, capsys, extra, message):
    data, run = synth_run
    args = [a.replace("{data}", str(data)) for a in extra]
    assert main(["occlusion", str(run), "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_needs_images_or_data(synth_run, tmp_path, capsys):
    _, run = synth_run
    assert main(["occlusion", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "give image files (--image) or a data folder (--data)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a command that fails before any work leaves no folder behind


def test_unreadable_image_is_a_clear_error(synth_run, tmp_path):
    _, run = synth_run
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    from zfnet.errors import ZFNetError

    with pytest.raises(ZFNetError, match="image .*bad.png is not an image"):
        occlusion_job(run, tmp_path / "o", images=[bad])
    assert not (tmp_path / "o").exists()  # every image is read before anything is written


def test_paths_outside_the_data_folder_show_their_name(synth_run, tmp_path):
    data, run = synth_run
    image = sorted((data / "val").rglob("*.png"))[0]
    copy = tmp_path / "mine.png"
    copy.write_bytes(Path(image).read_bytes())
    result = occlusion_job(run, tmp_path / "o", images=[copy], window=16, stride=16)
    assert result["images"][0]["image"] == "mine.png" and result["images"][0]["box"] is None


def test_panel_c_shows_the_strongest_maps_top_activations_on_other_images(synth_run, tmp_path):
    """Fig. 7 (c): each other image's value is the map's strongest activation in it, strongest first."""
    from zfnet.graph import trace
    from zfnet.visualize.topk import layer_outputs

    data, run_dir = synth_run
    result = occlusion_job(run_dir, tmp_path, data=data, n_images=2, window=16, stride=16, others=2,
                           search_images=6)
    loaded = load_run(run_dir)
    graph = trace(loaded.model)
    for record in result["images"]:
        others = record["others"]
        assert len(others) == 2 and record["image"] not in [o["image"] for o in others]
        values = [o["value"] for o in others]
        assert values == sorted(values, reverse=True)
        for other in others:
            img = load_image(data / other["image"], loaded.base_size)
            x = center_crop(loaded.normalize(img[None]), loaded.input_size)
            with torch.no_grad():
                act = layer_outputs(graph, x, [record["layer"]])[record["layer"]][0, record["channel"]]
            assert other["value"] == pytest.approx(float(act.max()), rel=1e-5, abs=1e-6)
    assert Image.open(tmp_path / result["images"][0]["figure"]).width > \
        Image.open(tmp_path / result["images"][0]["figure"]).height * 4  # six panels side by side


def test_panel_c_others_can_be_turned_off(synth_run, tmp_path):
    data, run_dir = synth_run
    result = occlusion_job(run_dir, tmp_path, data=data, n_images=1, window=16, stride=16, others=0)
    assert result["images"][0]["others"] == []
