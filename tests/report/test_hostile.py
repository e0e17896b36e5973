"""The report built from a hostile results folder: it reads, copies and links only what it should.

A results folder is data someone else may have made. Its JSON names figures that climb out of it (``..``,
absolute paths, symbolic links), figures that are not images (SVG with a script, HTML renamed ``.png``,
a PNG header then garbage, a decompression bomb), markup and ``javascript:`` in every name it controls,
numbers that are not finite and values of the wrong type, a JSON file too large or too deep to read. The
build must finish (or refuse in one line), leave each such item out with a warning, copy nothing from
outside, write nothing outside ``--out``, change nothing in the results, and write pages in which no text
of the results is markup.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fakes import png
from PIL import Image

from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.report import _inputs, build_report
from zfnet.report._inputs import Refused, parse_json, read_input, read_raster

SCRIPT = "<script>alert('x')</script>"
JS = "javascript:alert(1)"
PASSWD = "root:x:0:0:secret-marker:/root:/bin/bash\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, in under a hundred bytes (checksums valid)."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _chunk(b"IEND", b""))


def _json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) and a hash of its content or link target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                found[str(path.relative_to(folder))] = f"-> {os.readlink(path)}"
            elif path.is_file() and not path.is_fifo():
                found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def write_hostile(root: Path) -> tuple[Path, Path]:
    """A hostile results folder ``root/results`` and, beside it, ``root/outside`` with what must not leak."""
    outside = root / "outside"
    outside.mkdir(parents=True)
    png(outside / "secret.png", 40, 40, seed=99)  # a real image: refused for where it is, not what it is
    (outside / "passwd").write_text(PASSWD)
    _json(outside / "stolen" / "analysis.json", {"kind": "stolen", "report": {"title": "stolen", "summary": ""}})

    src = root / "results"
    figs = src / "analysis" / "figs"
    figs.mkdir(parents=True)
    png(figs / "good.png", 60, 40, seed=1)
    Image.new("RGB", (30, 20), (200, 10, 10)).save(figs / "photo.jpg", format="JPEG")
    (figs / "png-named.jpeg").write_bytes((figs / "good.png").read_bytes())  # content decides the extension
    (figs / "script.svg").write_text(f'<svg xmlns="http://www.w3.org/2000/svg">{SCRIPT}</svg>')
    (figs / "svg-named.png").write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>')
    (figs / "page.png").write_text(f"<!doctype html><html><body>{SCRIPT}</body></html>")
    (figs / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + SCRIPT.encode() * 20)
    (figs / "bomb.png").write_bytes(bomb_png())
    (figs / "too-many-pixels.png").write_bytes(bomb_png(9000, 8000))  # under Pillow's limit, over the report's
    truncated = (figs / "good.png").read_bytes()
    (figs / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    (figs / "link.png").symlink_to(outside / "secret.png")
    (figs / "folder.png").mkdir()
    os.mkfifo(figs / "fifo.png")  # opening it to read would wait forever

    figures = [{"path": p, "caption": f"figure {p}"} for p in (
        "figs/good.png", "figs/photo.jpg", "figs/png-named.jpeg", "../../outside/secret.png",
        "../../../../../../../../etc/passwd", str(outside / "secret.png"), "/etc/passwd", "figs/link.png",
        "figs/script.svg", "figs/svg-named.png", "figs/page.png", "figs/garbage.png", "figs/bomb.png",
        "figs/too-many-pixels.png", "figs/truncated.png", "figs/folder.png", "figs/fifo.png", JS,
        "figs/nul\0.png", "data:image/png;base64,iVBORw0KGgo=")]
    figures += [{"figure": "figs/good.png", "label": SCRIPT, "image": f"../{SCRIPT}.png",
                 "caption": f'"><img src=x onerror=alert(3)> {JS}'},
                {"figure": 42}, "not an object", {"path": ["a", "list"]}]
    _json(src / "analysis" / "hostile.json", {"kind": 'x"><script>alert(4)</script>', "report": {
        "title": f"Title {SCRIPT}", "summary": f"Summary {SCRIPT} <a href='{JS}'>click</a>",
        "figures": figures,
        "tables": [{"caption": f"cap {SCRIPT}", "columns": [SCRIPT, "n", {"html": SCRIPT}],
                    "rows": [[SCRIPT, 1.5, JS], ["inf", "NaN", None]]},
                   {"caption": "wrong types", "columns": 5, "rows": 7}, "a string"]}})
    # numbers Python's json reads but that are no numbers: NaN, Infinity, 1e999, and an integer past 2**53
    (src / "analysis" / "numbers.json").write_text(
        '{"kind": "numbers", "report": {"title": "Numbers", "summary": "", "figures": [], "tables": ['
        '{"caption": "c", "columns": ["a", "b", "c", "d"], "rows": [[NaN, Infinity, -1e999, '
        + "9" * 300 + "]]}]}}")

    _json(src / "analysis" / "climb.json", {"kind": "../../../pwned", "report": {"title": "climb", "summary": ""}})
    (src / "loop.json").symlink_to(src / "loop.json")  # a symbolic link loop

    run = src / "runs" / f"run{SCRIPT}"
    _json(run / "config.json", {"model": f"zfnet-tiny{SCRIPT}", "model_options": ["not", "a", "dict"],
                                "epochs": "four"})
    _json(run / "classes.json", {"classes": ["a", "b"], "names": 7})
    (run / "metrics.jsonl").write_text("\n".join([
        json.dumps({"epoch": 1, "val_top1_error": 0.5, "train_top1_error": 0.6, "lr": 0.01, "seconds": 2}),
        '{"epoch": 2, "val_top1_error": NaN, "train_top1_error": Infinity, "lr": 1e999, "seconds": 1e308}',
        json.dumps({"epoch": "three", "val_top1_error": "0.1", "seconds": [1]}),
        json.dumps({"epoch": 4, "val_top1_error": 1e300, "train_top1_error": 0.2, "lr": -1, "seconds": 10**15}),
        "{not json", "[1, 2]", "[" * 5000 + "]" * 5000]) + "\n")
    run2 = src / "runs" / "fine"  # a model name that builds, with HTML in a class name
    _json(run2 / "config.json", {"model": "zfnet-tiny", "model_options": {}, "epochs": 2})
    _json(run2 / "classes.json", {"classes": ["a", "b"], "names": [SCRIPT, JS]})

    vis = src / "figures"
    png(vis / "top4-conv1.png", 200, 60, seed=3)
    png(vis / "maps" / "ok.png", 30, 30, seed=4)
    layers = {
        f"conv1{SCRIPT}": {"3": {"image_ids": [1, 2], "positions": [[0, 1], 5], "values": [1.0, float("nan")],
                                 "projections_png": "maps/ok.png", "patches_png": "../../outside/secret.png",
                                 "evolution_png": "maps/../../../outside/secret.png"},
                           "²": {"image_ids": 5, "positions": {"a": 1}, "values": "x", "labels": [SCRIPT]},
                           "9" * 5000: "not an object",
                           JS: {"png": "top4-conv1.png"}},
        f"conv1{SCRIPT}x": {"1": {"png": 17}},  # its slug collides with the layer above's
        "javascript:alert(1)//": {"0": {"png": "top4-conv1.png"}},
        "broken": ["not", "a", "dict"],
        "../../../../pwned": {"0": {}},
    }
    _json(vis / "index.json", {"run": f"../{SCRIPT}", "k": "nine", "images": "many", "split": ["val"],
                               "weights": {"x": 1}, "snapshots": 3, "layers": layers,
                               "figures": {"filters-conv1": "/etc/passwd", "top4-conv2": 5}})

    _json(src / "evaluation.json", {"ten_crop": "yes", "results": [
        {"name": SCRIPT, "top1_error": "0.3", "top5_error": 1e300, "images": {"n": SCRIPT}}]})

    (src / "link-dir").symlink_to(outside / "stolen", target_is_directory=True)
    (src / "linked.json").symlink_to(outside / "stolen" / "analysis.json")
    (src / "deep.json").write_text('{"kind": "deep", "report": ' + "[" * 200 + "]" * 200 + "}")
    with open(src / "huge.json", "wb") as f:  # 200 MiB, sparse: no disk, no time; refused before reading
        f.truncate(200 * 2**20)
    return src, outside


class _Tags(HTMLParser):
    """Every start tag and its attributes, and the text between tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


_OWN_LINK = re.compile(r"(#[a-z0-9_-]+|(?:img/|assets/)?[a-z0-9_][a-z0-9_.-]*(?:#[a-z0-9_-]+)?|data:,)")
_TAGS = {"html", "head", "meta", "title", "link", "script", "body", "header", "a", "span", "button", "div",
         "nav", "h1", "h2", "h3", "h4", "main", "footer", "em", "dl", "dt", "dd", "kbd", "section", "p", "ol", "li",
         "article", "strong", "code", "svg", "g", "polygon", "text", "details", "summary", "table", "caption",
         "thead", "tbody", "tr", "th", "td", "figure", "figcaption", "img"}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The hostile results, their report, the warnings of its build, and snapshots taken around it."""
    root = tmp_path_factory.mktemp("hostile")
    src, outside = write_hostile(root)
    before = {"results": _snapshot(src), "outside": _snapshot(outside), "root": sorted(os.listdir(root))}
    capture = _Capture()
    logger = logging.getLogger("zfnet")
    logger.addHandler(capture)
    try:
        index = build_report([src], root / "site")
    finally:
        logger.removeHandler(capture)
    after = {"results": _snapshot(src), "outside": _snapshot(outside), "root": sorted(os.listdir(root))}
    return {"src": src, "outside": outside, "site": index.parent, "before": before, "after": after,
            "warnings": capture.messages}


def test_the_build_finishes_and_changes_nothing_it_reads(hostile):
    before, after = hostile["before"], hostile["after"]
    assert after["results"] == before["results"] and after["outside"] == before["outside"]  # untouched
    assert after["root"] == sorted([*before["root"], "site"])  # and nothing new beside them but --out
    site = hostile["site"]
    written = set(json.loads((site / "report.json").read_text())["files"])
    assert {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()} == written | {"report.json"}
    assert not [p for p in site.rglob("*") if p.is_symlink()]


def test_nothing_is_copied_from_outside_and_only_raster_images(hostile):
    site, outside = hostile["site"], hostile["outside"]
    secrets = {p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    for path in site.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert data not in secrets, path
            assert b"secret-marker" not in data, path
    images = sorted((site / "img").iterdir())
    for image in images:
        data = image.read_bytes()
        assert image.suffix in (".png", ".jpg") and data[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0"), image.name
        with Image.open(image) as img:
            img.load()
    names = " ".join(p.name for p in images)
    for kept in ("good-", "photo-", "png-named-", "ok-", "top4-conv1-"):
        assert kept in names, kept
    assert re.search(r"png-named-[0-9a-f]{12}\.png", names)  # a PNG named .jpeg is copied as .png
    for refused in ("secret", "link", "script", "svg-named", "page", "garbage", "bomb", "too-many", "truncated",
                    "fifo", "passwd", "filters-conv1"):
        assert refused not in names, refused


def test_every_item_left_out_is_named_in_one_warning(hostile):
    warnings = "\n".join(hostile["warnings"])
    for expected in ("outside the results folder", "is not a PNG or JPEG image", "content is not PNG or JPEG",
                     "30000×30000 pixels", "9000×8000 pixels", "not a readable PNG image", "not a regular file",
                     "MiB, more than the 64 MiB", "nested more than 64 levels", "a symbolic link to outside",
                     "².image_ids is an integer, not a list", "names is an integer, not a list",
                     "model_options is a list, not an object", "line 2 val_top1_error = nan",
                     "results[0].top1_error is a string",
                     "rows[0][1] = inf", "cannot rebuild model", "loop.json: Too many levels of symbolic links"):
        assert expected in warnings, expected
    assert all("\n" not in w and "Traceback" not in w for w in hostile["warnings"])
    assert "\x1b" not in warnings


def test_pages_hold_no_markup_from_the_results(hostile):
    site = hostile["site"]
    pages = sorted(site.glob("*.html"))
    assert len(pages) >= 6
    for page in pages:
        html = page.read_text()
        assert SCRIPT not in html and "<img src=x" not in html and "onerror=" not in html.replace("onerror=alert", "")
        parsed = _Tags()
        parsed.feed(html)
        for tag, attrs in parsed.tags:
            assert tag in _TAGS, (page.name, tag)
            assert not [a for a in attrs if a.startswith("on")], (page.name, tag, attrs)
            if tag == "script":
                assert attrs == {"src": "assets/report.js", "defer": None}, page.name
            for key in ("href", "src", "id"):
                if attrs.get(key) is not None:
                    assert _OWN_LINK.fullmatch(str(attrs[key])) and ".." not in str(attrs[key]), (page.name, attrs)
            if tag == "img":
                assert (site / str(attrs["src"])).is_file()
        assert "\0" not in html and "\x1b" not in html  # control characters from the results are replaced
    text = " ".join(" ".join(_text(p)) for p in pages)
    assert SCRIPT in text and "Title <script>" in text  # shown, as text


def _text(page: Path) -> list[str]:
    parsed = _Tags()
    parsed.feed(page.read_text())
    return parsed.text


def test_refused_figures_are_shown_as_left_out(hostile):
    site = hostile["site"]
    page = site / "x-script-alert-4-script.html"  # the kind 'x"><script>alert(4)</script>' as a slug
    text = " ".join(_text(page))
    assert "figure outside the results folder" in text and "figure not a PNG or JPEG image" in text
    assert "figure too many pixels" in text and "figure a damaged image" in text and "figure unreadable" in text
    assert "figure not a regular file" in text  # the FIFO, not waited on
    assert "../../outside/secret.png" in text  # the path as the results gave it: no link, no copy
    numbers = (site / "numbers.html").read_text()
    assert numbers.count("<td>—</td>") + numbers.count('<td class="num">—</td>') == 4


def test_layer_names_and_map_keys_make_safe_unique_pages(hostile):
    site = hostile["site"]
    layers = sorted(p.name for p in site.glob("layer-*.html"))
    assert len(layers) == 4 and len(set(layers)) == 4  # "broken" is not a layer: its maps are not an object
    assert all(re.fullmatch(r"layer-[a-z0-9_-]+\.html", name) for name in layers)


def test_cli_refuses_a_huge_or_bad_json_source_in_one_line(hostile, tmp_path, capsys):
    src = hostile["src"]
    assert main(["report", str(src / "huge.json"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "huge.json is 200 MiB, more than the 64 MiB" in err
    assert main(["report", str(src / "deep.json"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nested more than 64 levels" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_size_cap_reads_no_more_than_it_allows(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text(json.dumps({"x": "y" * 100}))
    with pytest.raises(Refused, match="more than the"):
        read_input(tmp_path / "a.json", tmp_path, limit=50)
    monkeypatch.setattr(_inputs, "MAX_IMAGE_BYTES", 100)
    png(tmp_path / "big.png", 64, 64)
    with pytest.raises(Refused) as err:
        read_raster(tmp_path / "big.png", tmp_path)
    assert err.value.rule == "too large"


def test_parse_json_replaces_what_is_not_a_number():
    data = parse_json('{"a": [NaN, 1, {"b": -Infinity}], "c": 1e999, "d": 9007199254740993, "e": true}', "x.json")
    assert data == {"a": [None, 1, {"b": None}], "c": None, "d": None, "e": True}
    with pytest.raises(Refused, match="nested more than"):
        parse_json("[" * 70 + "]" * 70, "x.json")
    with pytest.raises(Refused, match="not valid JSON"):
        parse_json("{", "x.json")


def test_out_folder_with_a_link_out_is_refused_and_nothing_written_outside(sources, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "site"
    build_report([sources], out)
    before = _snapshot(elsewhere)
    for name in ("img", "assets"):
        moved = out / f"{name}-real"
        (out / name).rename(moved)
        (out / name).symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(ZFNetError, match="leads out of --out"):
            build_report([sources], out)
        (out / name).unlink()
        moved.rename(out / name)
    assert _snapshot(elsewhere) == before == {}


def test_a_forged_manifest_removes_nothing_outside(sources, tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    out = tmp_path / "site"
    build_report([sources], out)
    (out / "victim").mkdir()
    (out / "victim" / "file.txt").write_text("x")
    (out / "img" / "link.png").symlink_to(keep)
    manifest = json.loads((out / "report.json").read_text())
    manifest["files"] += ["../keep.txt", str(keep), "img/link.png", "img/../../keep.txt", "victim", ".", "",
                          "a\0b", 5]
    (out / "report.json").write_text(json.dumps(manifest))
    build_report([sources], out)
    assert keep.read_text() == "mine"
    assert not (out / "img" / "link.png").is_symlink()  # the link it listed is removed, not its target
    assert (out / "victim" / "file.txt").is_file()  # a folder is never removed


def test_a_figure_inside_the_output_folder_is_not_read(tmp_path):
    src = tmp_path / "results"
    _json(src / "a.json", {"kind": "k", "report": {"title": "t", "summary": "", "figures": [
        {"path": "report/img/x.png"}]}})
    png(src / "report" / "img" / "x.png", 20, 20)
    (src / "report" / "report.json").write_text(json.dumps({"format": "zfnet-report", "files": ["img/x.png"]}))
    build_report([src], src / "report")
    assert "inside the report" in (src / "report" / "k.html").read_text()


def test_image_checks_read_the_bytes_they_copy(tmp_path):
    png(tmp_path / "a.png", 20, 10)
    raster = read_raster(tmp_path / "a.png", tmp_path)
    assert raster.data == (tmp_path / "a.png").read_bytes() and (raster.width, raster.height) == (20, 10)
    with Image.open(io.BytesIO(raster.data)) as img:
        assert img.format == "PNG"


def test_what_is_shown_stays_in_proportion(tmp_path, monkeypatch, caplog):
    """A small file can ask for huge pages (one wide row, then many empty ones, each padded to the widest)."""
    import zfnet.report._sources as sources_module
    import zfnet.report.html as html_module

    monkeypatch.setattr(sources_module, "MAX_ROWS", 50)
    monkeypatch.setattr(sources_module, "MAX_COLUMNS", 10)
    monkeypatch.setattr(sources_module, "MAX_MAPS", 5)
    monkeypatch.setattr(html_module, "_MAX_PAGES", 3)
    src = tmp_path / "results"
    rows = [list(range(1000))] + [[]] * 10_000  # unbounded, 10 million cells
    _json(src / "wide.json", {"kind": "wide", "report": {"title": "t", "summary": "", "tables": [
        {"caption": "c", "columns": [f"c{i}" for i in range(1000)], "rows": rows}]}})
    _json(src / "vis" / "index.json", {"layers": {f"l{i}": {str(m): {} for m in range(100)} for i in range(2)}})
    _json(src / "zzz.json", {"kind": "zzz", "report": {"title": "the fourth page", "summary": ""}})
    with caplog.at_level(logging.WARNING, logger="zfnet"):
        site = build_report([src], tmp_path / "site").parent
    text = (site / "wide.html").read_text()
    assert text.count("<tr>") == 51 and text.count('scope="col"') == 10  # a header and 50 rows; 10 columns
    assert sorted(p.name for p in site.glob("*.html")) == ["index.html", "layer-l0.html", "layer-l1.html", "wide.html"]
    layer = next(site.glob("layer-*.html")).read_text()
    assert layer.count('class="fmap navitem"') == 5
    assert "9951 report.tables[0].rows beyond the first 50" in caplog.text
    assert "the 1 after the first 3 are left out" in caplog.text


def test_templates_mark_nothing_safe_and_filter_every_link():
    """The templates' own guarantee: no ``|safe``, no autoescape off, every href, src and id through ``link``."""
    folder = Path(__file__).parents[2] / "src" / "zfnet" / "report" / "templates"
    templates = sorted(folder.glob("*.html"))
    assert len(templates) >= 5
    for template in templates:
        text = template.read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|Markup|\|\s*e\b", text), template.name
        for attr in re.findall(r'\b(?:href|src|id|xlink:href|action|style)="([^"]*\{\{[^"]*)"', text):
            assert re.fullmatch(r"#?\{\{ [a-z_.]+\|link \}\}", attr) or attr.startswith("max-width: {{ d.width"), \
                (template.name, attr)
