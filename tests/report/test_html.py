"""The report built from fake saved results: pages, escaping, links, anchors, rebuilds, refusals, the CLI."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from fakes import EVIL, EVIL_FILE, png

from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.models import build
from zfnet.report import build_report
from zfnet.report._architecture import architecture
from zfnet.report._sources import discover


class _Page(HTMLParser):
    """Links, image tags and element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.links.append(str(a[key]))
        if tag == "img":
            self.images.append(a)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def report(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "site"
    index = build_report([sources], out)
    assert index == out / "index.html"
    return out


def test_pages_of_every_result(report):
    pages = sorted(p.name for p in report.glob("*.html"))
    assert pages == ["architectures.html", "index.html", "invariance.html", "layer-conv1.html", "layer-conv2.html",
                     "occlusion.html", "saliency.html", "transfer.html"]
    index = (report / "index.html").read_text()
    # analyses in the paper's order, a kind the report does not know last
    order = [index.index(f'href="{name}.html"') for name in ("occlusion", "invariance", "architectures",
                                                             "transfer", "saliency")]
    assert order == sorted(order)
    for section in ("Architecture", "Training", "Errors", "Feature maps", "Analyses"):
        assert f"<h2>{section}</h2>" in index
    assert "28.0%" in index and "31.0%" in index  # the evaluation table, centre and ten crops
    assert "38.4" in index  # the paper's Table 2 beside it


def test_text_from_data_is_escaped(report):
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for page in report.glob("*.html"):
        text = page.read_text()
        assert EVIL not in text and "<svg onload" not in text, page.name
    assert escaped in (report / "index.html").read_text()  # the class name
    occlusion = (report / "occlusion.html").read_text()
    assert occlusion.count(escaped) >= 2  # the figure's label and the table cell
    assert "&lt;svg onload=alert(2)&gt;.png" in occlusion  # the file name
    assert "zf&amp;net" in (report / "index.html").read_text()  # the run folder's name


def test_links_are_relative_and_resolve(report):
    for page in report.glob("*.html"):
        parsed = _parse(page)
        for link in parsed.links:
            parts = urlsplit(link)
            assert not parts.scheme or parts.scheme == "data", f"{page.name}: {link}"  # no http(s), no CDN
            assert not link.startswith("/"), f"{page.name}: absolute {link}"
            if parts.scheme == "data":
                continue
            target = (page.parent / unquote(parts.path)) if parts.path else page
            assert target.is_file(), f"{page.name}: {link} does not exist"
            assert report.resolve() in target.resolve().parents or target.resolve().parent == report.resolve()
            if parts.fragment and target.suffix == ".html":
                assert parts.fragment in _parse(target).ids, f"{page.name}: no #{parts.fragment} in {target.name}"
    for asset in list(report.rglob("*.css")) + list(report.rglob("*.js")) + list(report.glob("*.html")):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", asset.read_text()), asset.name


def test_images_are_lazy_sized_and_copied(report):
    for page in report.glob("*.html"):
        for img in _parse(page).images:
            assert img.get("loading") == "lazy", (page.name, img)
            assert img.get("width") and img.get("height"), (page.name, img)
            assert str(img["src"]).startswith("img/")
    copied = {p.name for p in (report / "img").iterdir()}
    assert not any(n.startswith("000") for n in copied)  # nothing from the data set
    assert not any("decoy" in p.read_text() for p in report.glob("*.html"))


def test_feature_maps_have_anchors_and_their_own_images(report):
    conv1 = _parse(report / "layer-conv1.html")
    assert {"conv1-map-3", "conv1-map-7", "conv1-map-11"} <= conv1.ids
    srcs = [str(i["src"]) for i in conv1.images]
    for m in (3, 7, 11):
        for kind in ("projections", "patches", "evolution"):
            assert any(s.startswith(f"img/conv1-{m}-{kind}-") for s in srcs), (m, kind)
    assert not any("top4-conv1" in s or "evolution-conv1" in s for s in srcs)  # per-map PNGs replace the grids
    assert any("filters-conv1" in s for s in srcs)

    conv2 = _parse(report / "layer-conv2.html")  # only the layer grid: shown once, maps point into it
    assert {"conv2-map-0", "conv2-map-5", "conv2-map-12"} <= conv2.ids
    srcs = [str(i["src"]) for i in conv2.images]
    assert sum("top4-conv2" in s for s in srcs) == 1 and sum("evolution-conv2" in s for s in srcs) == 1
    text = (report / "layer-conv2.html").read_text()
    assert "Pair 3 in the layer figure above" in text  # map 12 is the third pair
    assert "7.25" in text  # its top activations

    index = _parse(report / "index.html")
    assert "layer-conv1.html#conv1-map-7" in index.links and "layer-conv2.html" in index.links


def test_missing_figure_is_shown_as_missing(report):
    text = (report / "saliency.html").read_text()
    assert "figure missing" in text and "no-such-figure.png" in text
    assert not _parse(report / "saliency.html").images


def test_training_curves_and_architecture(report):
    curves = [p for p in (report / "img").iterdir() if p.name.startswith("training-curves-")]
    assert len(curves) == 1 and curves[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (report / "index.html").read_text()
    assert "<svg" in index and "conv5" in index


def test_architecture_rebuilt_on_meta_device_matches_the_model():
    arch = architecture({"model": "zfnet-tiny", "model_options": {"removed": ["conv4"]}}, num_classes=4)
    layers, size, params = arch.layers, arch.input_size, arch.parameters
    model = build("zfnet-tiny", num_classes=4, removed=("conv4",))
    assert params == sum(p.numel() for p in model.parameters())
    assert size == model.config.input_size
    assert [la.name for la in layers] == model.layer_names
    sizes = model.config.map_sizes()
    by_name = {s.name: s for la in layers for s in la.stages}
    x = torch.zeros(1, 3, size, size)
    for name, module in model.named_children():  # every stage's real output shape
        x = module(x)
        if name in by_name:
            assert by_name[name].output == tuple(x.shape[1:]), name
    assert by_name["conv1"].output[1] == sizes["conv1"] and by_name["pool5"].output[1] == sizes["pool5"]
    assert "stride" in by_name["conv1"].operation and by_name["conv1"].size.endswith(f"×{model.config.conv1[0]}")


def test_rebuild_removes_its_stale_files_and_nothing_else(sources, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sources, src)
    out = tmp_path / "site"
    build_report([src], out)
    (out / "notes.txt").write_text("mine")
    before = set(json.loads((out / "report.json").read_text())["files"])
    shutil.rmtree(src / "analysis" / "transfer")
    png(src / "figures" / "filters-conv1.png", 40, 40, seed=9)  # changed content: a new copy, the old one goes
    build_report([src], out)
    after = set(json.loads((out / "report.json").read_text())["files"])
    assert "transfer.html" in before and not (out / "transfer.html").exists() and "transfer.html" not in after
    assert len([f for f in after if "filters-conv1" in f]) == 1
    assert not [f for f in before - after if (out / f).exists()]
    assert (out / "notes.txt").read_text() == "mine"
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == after | {"report.json", "notes.txt"}


def test_report_is_relocatable(report, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(report, moved)
    for page in moved.glob("*.html"):
        assert str(report) not in " ".join(_parse(page).links)
        for link in _parse(page).links:
            path = urlsplit(link).path
            if path and not link.startswith("data:"):
                assert (moved / unquote(path)).is_file()


def test_refusals(sources, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(ZFNetError, match="not empty"):
        build_report([sources], foreign)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZFNetError, match="is a file"):
        build_report([sources], tmp_path / "file")
    with pytest.raises(ZFNetError, match="does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZFNetError, match="no zfnet results"):
        build_report([tmp_path / "empty"], tmp_path / "b")
    with pytest.raises(TypeError):
        build_report(sources, tmp_path / "c")  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_output_inside_a_source_is_not_read_back(sources, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sources, src)
    build_report([src], src / "report")
    build_report([src], src / "report")  # the first report's copies are not taken as results
    found = discover([src], exclude=src / "report")
    assert len(found.analyses) == 5 and len(found.visualizations) == 1 and len(found.runs) == 1
    with pytest.raises(ZFNetError, match="inside it"):
        build_report([src / "report"], src / "report")


def test_discover_single_json_files(sources):
    found = discover([sources / "evaluation.json", sources / "analysis" / "occlusion" / "occlusion.json"])
    assert len(found.evaluations) == 1 and [a.kind for a in found.analyses] == ["occlusion"]
    with pytest.raises(ZFNetError, match="not a zfnet result"):
        discover([sources / "runs" / "zf&net" / "config.json"])
    assert EVIL_FILE not in json.dumps([a.title for a in found.analyses])


def test_cli_report(sources, tmp_path, capsys):
    assert main(["report", str(sources), "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file()
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_build_cut_short_is_rebuilt_in_place(sources, tmp_path, monkeypatch):
    import zfnet.report.html as report_html

    def fail(runs):
        raise RuntimeError("cut short")

    monkeypatch.setattr(report_html, "training_curves_png", fail)
    with pytest.raises(RuntimeError, match="cut short"):
        build_report([sources], tmp_path / "site")
    monkeypatch.undo()
    assert (tmp_path / "site" / "report.json").is_file()  # marked as a report before anything else
    assert build_report([sources], tmp_path / "site").is_file()


@pytest.mark.slow
def test_report_of_real_outputs(tiny_tree, tmp_path):
    """A real run and the real ``zfnet visualize`` output, not fakes: the schemas the report reads."""
    from zfnet.experiments import visualize
    from zfnet.train import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(data=str(tiny_tree), out=str(run), model="zfnet-tiny", epochs=1, batch_size=8, workers=0,
                      snapshots=(1,)), show_progress=False)
    index = visualize.run(visualize.Config(run=str(run), data=str(tiny_tree), layers=("conv1", "conv2"), maps=2),
                          tmp_path / "vis", show_progress=False).numbers
    out = build_report([tmp_path / "run", tmp_path / "vis"], tmp_path / "site")
    site = out.parent
    assert sorted(p.name for p in site.glob("layer-*.html")) == ["layer-conv1.html", "layer-conv2.html"]
    for layer in ("conv1", "conv2"):
        page = _parse(site / f"layer-{layer}.html")
        assert {f"{layer}-map-{m}" for m in index["layers"][layer]} <= page.ids
        assert page.images  # the layer's figures (or the maps' own)
        for img in page.images:
            assert (site / str(img["src"])).is_file()
    text = (site / "index.html").read_text()
    assert "zfnet-tiny" in text and "<svg" in text and "training-curves-" in text


def test_rebuilding_a_report_keeps_its_title_unless_given(sources, tmp_path):
    out = tmp_path / "site"
    build_report([sources], out, title="zfnet demo")
    build_report([sources], out)  # `zfnet report DEMO --out DEMO/report` must not rename the demo's report
    assert "zfnet demo" in (out / "index.html").read_text().split("</title>")[0]
    build_report([sources], out, title="Mine")
    assert "Mine" in (out / "index.html").read_text().split("</title>")[0]
    build_report([sources], tmp_path / "new")
    assert "ZFNet report" in (tmp_path / "new" / "index.html").read_text().split("</title>")[0]
