"""Data-set scans: chunks and shards, accumulators combined exactly, state saved and resumed, collectives."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.torchrun import free_port
from helpers.trees import make_tree

from zfnet.data import ImageStream, open_dataset
from zfnet.distributed import DistContext
from zfnet.scan import CollectiveError, Rows, Scan, Sums, gather_states, model_fingerprint, plan_chunks, rank_chunks
from zfnet.visualize.topk import RunningTopK

pytestmark = pytest.mark.usefixtures("one_thread")


def test_chunks_and_shards_cover_every_image_once():
    chunks = plan_chunks(range(11), 4)
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    for world in (1, 2, 3, 5):
        mine = [rank_chunks(len(chunks), r, world) for r in range(world)]
        assert sorted(c for m in mine for c in m) == list(range(len(chunks)))
    assert rank_chunks(3, 1, 2) == [1]
    with pytest.raises(ValueError, match="batch_size"):
        plan_chunks(range(3), 0)


def _outputs(seed: int, n: int, c: int = 6, h: int = 5) -> torch.Tensor:
    # Small integers: many equal maxima, so the order of ties is tested too.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 6, (n, c, h, h), generator=g).float()


@pytest.mark.parametrize("world", [2, 3])
def test_top_k_of_shards_combined_is_the_single_pass_top_k(world):
    out = _outputs(0, 40)
    # One pass in order, batches of 4 (what one process does).
    ref = RunningTopK("x", 5)
    for b, batch in enumerate(out.split(4)):
        ref.update(batch, 4 * b)
    # The same batches dealt round-robin to `world` ranks, each its own running top-k.
    ranks = [RunningTopK("x", 5) for _ in range(world)]
    for b, batch in enumerate(out.split(4)):
        ranks[b % world].update(batch, ids=torch.arange(4 * b, 4 * b + len(batch)))
    states = [r.state() for r in ranks]
    merged = RunningTopK("x", 5)
    merged.combine(states)
    want, got = ref.result(), merged.result()
    assert torch.equal(got.values, want.values)
    assert torch.equal(got.image_index, want.image_index)
    assert torch.equal(got.position, want.position)


def test_top_k_combine_with_a_rank_that_saw_nothing_and_fewer_images_than_k():
    out = _outputs(1, 3)
    ref = RunningTopK("x", 5)
    ref.update(out, 0)
    merged = RunningTopK("x", 5)
    merged.combine([{}, ref.state()])
    assert torch.equal(merged.result().image_index, ref.result().image_index)
    assert (merged.result().image_index[:, 3:] == -1).all()


def test_top_k_state_round_trips_and_refuses_a_crafted_one():
    top = RunningTopK("conv1", 3)
    top.update(_outputs(2, 8), 0)
    again = RunningTopK("conv1", 3)
    again.load_state(top.state())
    assert torch.equal(again.result().position, top.result().position)
    bad = dict(top.state(), keys=top.state()["keys"].float())
    with pytest.raises(ValueError, match="keys"):
        again.load_state(bad)
    with pytest.raises(ValueError, match=r"not \(C, 4\)"):
        RunningTopK("conv1", 4).load_state(top.state())


def test_rows_come_back_in_the_pass_order_and_sums_add():
    rows = [Rows(), Rows()]
    rows[0].add(torch.tensor([2, 3]), p=torch.tensor([[2.0], [3.0]]))
    rows[1].add(torch.tensor([0, 1]), p=torch.tensor([[0.0], [1.0]]))
    rows[0].add(torch.tensor([4]), p=torch.tensor([[4.0]]))
    rows[0].combine([r.state() for r in rows])
    assert rows[0].result()["position"].tolist() == [0, 1, 2, 3, 4]
    assert rows[0].result()["p"].flatten().tolist() == [0, 1, 2, 3, 4]
    sums = Sums(hits=0.0, n=0.0)
    sums.add(hits=2, n=3)
    sums.combine([sums.state(), {"hits": torch.tensor(1.0, dtype=torch.float64), "n": torch.tensor(4.0)}])
    assert (float(sums.totals["hits"]), float(sums.totals["n"])) == (3.0, 7.0)


def test_model_fingerprint_changes_with_any_weight():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = model_fingerprint(net)
    assert model_fingerprint(net) == before
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-6
    assert model_fingerprint(net) != before


class _Killed(Exception):
    pass


def _stream(tmp_path: Path) -> ImageStream:
    root = make_tree(tmp_path / "data", classes=3, per_class=2, val_per_class=6)
    return ImageStream(open_dataset(root, "val", 32), workers=0, cache="memory", show_progress=False)


def _scan_sums(stream, out, *, stop_after=None, fingerprint="a", seen=None):
    top, rows, sums = RunningTopK("pixels", 3), Rows(), Sums(images=0.0)
    calls = []

    def consume(batch, positions):
        if stop_after is not None and len(calls) == stop_after:
            raise _Killed
        calls.append(positions.tolist())
        x = batch.images.float()
        top.update(x, ids=positions)
        rows.add(positions, mean=x.mean((1, 2, 3)))
        sums.add(images=len(positions))

    Scan(range(len(stream)), 4, state_dir=out, name="test", fingerprint=fingerprint, save_every=0).run(
        stream, consume, [top, rows, sums], show_progress=False)
    if seen is not None:
        seen.extend(calls)
    return top.result(), rows.result(), float(sums.totals["images"])


def test_an_interrupted_scan_resumes_where_it_was_saved_with_the_same_result(tmp_path):
    stream = _stream(tmp_path)
    whole = _scan_sums(stream, tmp_path / "whole")
    out = tmp_path / "resumed"
    with pytest.raises(_Killed):
        _scan_sums(stream, out, stop_after=3)
    state = list(out.glob(".zfnet-state-test.rank0.safetensors"))
    assert state, "the running state was saved"
    seen: list = []
    again = _scan_sums(stream, out, seen=seen)
    assert seen[0] == list(range(12, 16)), "the three saved batches were not read again"
    assert torch.equal(again[0].image_index, whole[0].image_index)
    assert torch.equal(again[0].values, whole[0].values)
    assert torch.equal(again[1]["mean"], whole[1]["mean"])
    assert again[2] == whole[2] == 18


def test_a_state_of_another_scan_or_a_crafted_file_is_ignored_with_a_warning(tmp_path, caplog):
    stream = _stream(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(_Killed):
        _scan_sums(stream, out, stop_after=2)
    seen: list = []
    with caplog.at_level(logging.WARNING, logger="zfnet"):
        _scan_sums(stream, out, fingerprint="other model", seen=seen)
    assert "saved by another scan" in caplog.text
    assert seen[0] == [0, 1, 2, 3]
    state = out / ".zfnet-state-test.rank0.safetensors"
    state.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    caplog.clear()
    seen.clear()
    with caplog.at_level(logging.WARNING, logger="zfnet"):
        result = _scan_sums(stream, out, seen=seen)
    assert "not a readable scan state" in caplog.text
    assert seen[0] == [0, 1, 2, 3] and result[2] == 18


# --- two processes on gloo ---------------------------------------------------------------------------------


def _worker(rank: int, world: int, port: int, result_dir: str, die: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import datetime
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=10))
    ctx = DistContext(rank=rank, world_size=world)
    if die and rank == 1:
        os._exit(3)  # a rank that dies before the collective
    state = {"values": torch.arange(rank + 1, dtype=torch.float32)[:, None].expand(rank + 1, 2).clone()}
    try:
        got = gather_states(ctx, state if rank != 2 else {})
        torch.save([{k: v for k, v in g.items()} for g in got], Path(result_dir) / f"rank{rank}.pt")
    except CollectiveError as err:
        (Path(result_dir) / f"rank{rank}.err").write_text(str(err))
    finally:
        if not die:
            dist.destroy_process_group()


@pytest.mark.slow
def test_states_of_three_processes_are_gathered_in_rank_order(tmp_path):
    mp.spawn(_worker, args=(3, free_port(), str(tmp_path), False), nprocs=3, join=True)
    for rank in range(3):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert [len(g.get("values", ())) for g in got] == [1, 2, 0]
        assert got[2] == {}  # the rank that saw nothing
        assert got[1]["values"].tolist() == [[0.0, 0.0], [1.0, 1.0]]


@pytest.mark.slow
def test_a_rank_that_dies_makes_the_other_stop_with_a_clear_error(tmp_path):
    context = mp.spawn(_worker, args=(2, free_port(), str(tmp_path), True), nprocs=2, join=False)
    context.processes[0].join(timeout=60)
    assert not context.processes[0].is_alive(), "rank 0 hung after rank 1 died"
    for p in context.processes:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    message = (tmp_path / "rank0.err").read_text()
    assert "another process of this torchrun job stopped" in message


@pytest.mark.parametrize("name,value,message", [
    ("ZFNET_SCAN_SAVE_SECONDS", "soon", "must be a number of seconds"),
    ("ZFNET_SCAN_SAVE_SECONDS", "-1", "0 or more"),
    ("ZFNET_DIST_TIMEOUT", "0", "positive"),
    ("ZFNET_DIST_TIMEOUT", "inf", "positive"),
])
def test_bad_intervals_from_the_environment_are_named(monkeypatch, name, value, message):
    from zfnet.distributed import collective_timeout
    from zfnet.errors import ZFNetError
    from zfnet.scan import save_every_default

    monkeypatch.setenv(name, value)
    with pytest.raises(ZFNetError, match=f"{name} must .*{message}|{name} {message}"):
        (save_every_default if name.startswith("ZFNET_SCAN") else collective_timeout)()
    monkeypatch.setenv("ZFNET_SCAN_SAVE_SECONDS", "0")
    monkeypatch.setenv("ZFNET_DIST_TIMEOUT", "30")
    assert save_every_default() == 0 and collective_timeout().total_seconds() == 30


def test_an_image_listed_twice_has_two_positions(tmp_path):
    stream = _stream(tmp_path)
    rows = Rows()
    scan = Scan([3, 1, 3, 0, 5], 2)
    scan.run(stream, lambda batch, positions: rows.add(positions, ids=batch.indices), [rows], show_progress=False)
    got = rows.result()
    assert got["position"].tolist() == [0, 1, 2, 3, 4]
    assert got["ids"].tolist() == [3, 1, 3, 0, 5]


def test_a_state_that_matches_but_does_not_fit_is_ignored(tmp_path, caplog):
    from safetensors import safe_open
    from safetensors.torch import save_file

    stream = _stream(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(_Killed):
        _scan_sums(stream, out, stop_after=2)
    path = out / ".zfnet-state-test.rank0.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["1.mean"] = torch.tensor(1.0)  # the rows' column without rows, the fingerprint still right
    save_file(tensors, str(path), metadata=meta)
    seen: list = []
    with caplog.at_level(logging.WARNING, logger="zfnet"):
        result = _scan_sums(stream, out, seen=seen)
    assert "does not fit this scan" in caplog.text
    assert seen[0] == [0, 1, 2, 3] and result[2] == 18


def test_a_scan_leaves_the_stream_its_kept_workers(tmp_path):
    root = make_tree(tmp_path / "data", classes=2, per_class=1, val_per_class=3)
    stream = ImageStream(open_dataset(root, "val", 32), workers=1, cache="none", show_progress=False)
    rows = Rows()
    Scan(range(len(stream)), 2).run(stream, lambda b, pos: rows.add(pos, ids=b.indices), [rows],
                                    show_progress=False)
    assert stream._kept is not None  # the pass ran to its end: its DataLoader's workers are kept
    assert rows.result()["ids"].tolist() == list(range(len(stream)))


def test_clearing_removes_the_states_of_ranks_this_job_lacks_and_nothing_else(tmp_path):
    stream = _stream(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".zfnet-state-test.rank3.safetensors").write_bytes(b"left by a run of 4 processes")
    (out / ".zfnet-state-other.rank3.safetensors").write_bytes(b"another pass's")
    (out / "notes.rank3.safetensors").write_bytes(b"the user's")
    _scan_sums(stream, out)
    scan = Scan(range(len(stream)), 4, state_dir=out, name="test", fingerprint="a")
    scan.clear()
    assert sorted(p.name for p in out.iterdir()) == [".zfnet-state-other.rank3.safetensors",
                                                      "notes.rank3.safetensors"]
