"""Datasets: layouts, refusals, stratified splits, cached views and optical flow."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from indexed import write_indexed_video
from vidclf.config import ModelConfig, SamplingSpec
from vidclf.data import (
    DatasetError, LabelledVideo, cache_views, check_trainable, compute_views, discover, group_folds, load_views,
    stratified_split, view_cache_path, file_digest,
)
from vidclf.motion import FLOWS, clip_motion
from vidclf.train import plan_splits


def sampling(frames: int, size: int, motion_size: int) -> SamplingSpec:
    """The sampling a model with these settings trains and predicts with."""
    return ModelConfig(labels=("a", "b"), frames=frames, size=size, motion_size=motion_size).sampling()


def touch_videos(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_flat_layout(tmp_path: Path) -> None:
    touch_videos(tmp_path, ["a/1.mp4", "a/2.AVI", "b/1.mkv", "b/sub/2.webm", "b/.hidden.mp4", ".git/x.mp4", "b/n.txt"])
    found = discover(tmp_path)
    assert list(found) == ["all"]
    assert [(i.label, i.path.name) for i in found["all"]] == [("a", "1.mp4"), ("a", "2.AVI"), ("b", "1.mkv"), ("b", "2.webm")]


def test_split_layout(tmp_path: Path) -> None:
    touch_videos(tmp_path, ["train/a/1.mp4", "train/b/1.mp4", "val/a/2.mp4", "test/b/3.mp4"])
    found = discover(tmp_path)
    assert set(found) == {"train", "val", "test"}
    assert [i.label for i in found["val"]] == ["a"]


@pytest.mark.parametrize("names,message", [
    ([], "no videos found"),
    (["a/1.mp4", "a/2.mp4"], "at least 2 label folders"),
    (["a/1.mp4", "a/2.mp4", "b/1.mp4"], "b have fewer than 2 clips"),
])
def test_refusals(tmp_path: Path, names: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    touch_videos(tmp_path, names)
    with pytest.raises(DatasetError, match=message):
        check_trainable(discover(tmp_path)["all"], tmp_path)


def test_stratified_split_is_seeded_and_covers_every_class() -> None:
    items = [LabelledVideo(Path(f"{label}{i}.mp4"), label) for label, n in (("a", 10), ("b", 2), ("c", 5)) for i in range(n)]
    train, val = stratified_split(items, 0.2, seed=1)
    assert {i.label for i in train} == {i.label for i in val} == {"a", "b", "c"}
    assert sorted(i.label for i in val) == ["a", "a", "b", "c"]
    assert not {i.path for i in train} & {i.path for i in val}
    assert stratified_split(items, 0.2, seed=1) == (train, val)
    assert stratified_split(items, 0.2, seed=2) != (train, val)


def test_view_is_cached_and_recomputed_when_damaged(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "v.avi", 30)
    spec = sampling(frames=6, size=32, motion_size=8)
    (uniform, first), _ = load_views(video, file_digest(video), spec, views=2, seed=0)
    entry = view_cache_path(file_digest(video), spec, 1, 0)
    assert entry.is_file()
    (_, again), _ = load_views(video, file_digest(video), spec, views=2, seed=0)
    assert np.array_equal(first.rgb, again.rgb) and np.array_equal(first.motion, again.motion)
    entry.write_bytes(b"garbage")
    (_, healed), _ = load_views(video, file_digest(video), spec, views=2, seed=0)
    assert np.array_equal(first.rgb, healed.rgb)
    assert not np.array_equal(first.rgb, uniform.rgb)  # a random view differs from uniform


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_damaged_cache_entry_is_rebuilt_never_trusted(tmp_path: Path, damage: str) -> None:
    video = write_indexed_video(tmp_path / "v.avi", 30)
    spec, digest = sampling(frames=6, size=32, motion_size=8), file_digest(video)
    assert cache_views((video, digest, spec, 2, 0)) == ((), None)
    entry = view_cache_path(digest, spec, 1, 0)
    whole = entry.read_bytes()
    damaged = bytearray(whole)
    if damage == "truncate":
        damaged = damaged[: len(damaged) // 2]
    else:
        damaged[len(damaged) // 3] ^= 0x01  # inside the frames: only the zip's CRC can tell
    entry.write_bytes(bytes(damaged))
    assert cache_views((video, digest, spec, 2, 0)) == ((), None)
    assert entry.read_bytes() == whole


def test_random_views_are_seeded(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "v.avi", 60)
    spec = sampling(frames=6, size=32, motion_size=8)
    (a, c), _ = compute_views(video, file_digest(video), spec, [1, 2], seed=0)
    (b,), _ = compute_views(video, file_digest(video), spec, [1], seed=0)
    assert np.array_equal(a.rgb, b.rgb) and not np.array_equal(a.rgb, c.rgb)
    assert np.array_equal(a.motion, b.motion)


def test_view_motion_is_both_flows_of_its_frames(tmp_path: Path) -> None:
    """A view's motion maps are (dx, dy) of Farneback then of DIS between its own frames,
    stored as float16; the first step has no predecessor and is zero."""
    video = write_indexed_video(tmp_path / "v.avi", 40)
    (inputs,), _ = compute_views(video, file_digest(video), sampling(frames=6, size=32, motion_size=8), [1], seed=0)
    assert inputs.length == 6
    assert inputs.motion.shape == (6, 2 * len(FLOWS), 8, 8) == (6, 4, 8, 8)
    assert inputs.motion.dtype == np.float16
    assert np.all(inputs.motion[0] == 0) and np.abs(inputs.motion[1:]).max() > 0
    expected = clip_motion(inputs.rgb, 8).astype(np.float16)
    assert np.array_equal(inputs.motion, expected)


def test_short_video_is_padded_with_its_real_length(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "short.avi", 3)
    (inputs,), warnings = compute_views(video, file_digest(video), sampling(frames=8, size=32, motion_size=8), [0], 0)
    assert inputs.length == 3
    assert inputs.rgb[3:].max() == 0 and inputs.rgb[:3].max() > 0
    assert np.all(inputs.motion[3:] == 0)
    assert any("repeated" in w for w in warnings)


def moving_square_frames() -> np.ndarray:
    frames = []
    for t in range(5):
        frame = np.zeros((64, 64, 3), np.uint8)
        cv2.rectangle(frame, (10 + 4 * t, 20), (30 + 4 * t, 40), (255, 255, 255), -1)
        cv2.circle(frame, (20 + 4 * t, 30), 4, (0, 0, 0), -1)  # texture for the flow to follow
        frames.append(frame)
    return np.stack(frames)


@pytest.mark.parametrize("flow", FLOWS)
def test_flow_follows_motion_direction(flow: str) -> None:
    frames = moving_square_frames()
    maps = clip_motion(frames, 8, flows=(flow,))
    assert maps.shape == (5, 2, 8, 8) and maps.dtype == np.float32
    assert np.all(maps[0] == 0)
    assert maps[1:, 0].sum() > 0 and abs(maps[1:, 1].sum()) < maps[1:, 0].sum() / 3
    reversed_maps = clip_motion(frames[::-1].copy(), 8, flows=(flow,))
    assert reversed_maps[1:, 0].sum() < 0


def test_the_two_flows_stack_as_two_channel_pairs() -> None:
    assert FLOWS == ("farneback", "dis")
    frames = moving_square_frames()
    both = clip_motion(frames, 8)
    assert both.shape == (5, 4, 8, 8)
    farneback, dis = clip_motion(frames, 8, flows=("farneback",)), clip_motion(frames, 8, flows=("dis",))
    assert np.array_equal(both[:, :2], farneback)
    assert np.array_equal(both[:, 2:], dis)
    assert not np.allclose(farneback, dis)  # two methods, two different estimates
    assert np.array_equal(clip_motion(frames, 8, flows=("dis", "farneback")), np.concatenate([dis, farneback], 1))


def test_clip_inputs_computes_only_the_flows_asked_for_in_their_own_channels(tmp_path: Path) -> None:
    """What prediction asks for when a model gives DIS no weight: Farneback's maps exactly as
    in the full inputs, DIS's left at zero."""
    from vidclf.data import clip_inputs
    from vidclf.video import sample_frames

    spec = sampling(frames=6, size=32, motion_size=8)
    clip = sample_frames(write_indexed_video(tmp_path / "v.avi", 30), spec.frames, spec.size, "uniform", fit=spec.fit)
    full, farneback_only = clip_inputs(clip, spec), clip_inputs(clip, spec, ["farneback"])
    assert np.array_equal(farneback_only.motion[:, :2], full.motion[:, :2]) and np.abs(full.motion[:, 2:]).max() > 0
    assert not farneback_only.motion[:, 2:].any() and np.array_equal(farneback_only.rgb, full.rgb)


# --- groups and manifests ------------------------------------------------------------------------

PEOPLE_LAYOUT = [f"{action}/{person}_{action}.avi" for action in ("bend", "jump", "wave")
                 for person in ("daria", "denis", "eli", "ido", "lena")]


def test_group_regex_gives_each_clip_its_group_and_the_split_keeps_groups_apart(tmp_path: Path) -> None:
    touch_videos(tmp_path, PEOPLE_LAYOUT)
    items = discover(tmp_path, group="^([a-z]+)_")["all"]
    assert {item.group for item in items} == {"daria", "denis", "eli", "ido", "lena"}
    assert next(i for i in items if i.path.name == "eli_jump.avi").group == "eli"
    train, val = stratified_split(items, 0.2, seed=0)
    assert {i.group for i in train}.isdisjoint({i.group for i in val})
    assert {i.label for i in train} == {i.label for i in val} == {"bend", "jump", "wave"}
    assert len({i.group for i in val}) == 1 and stratified_split(items, 0.2, seed=0) == (train, val)


def test_no_group_is_ever_on_both_sides_of_a_split() -> None:
    """A property over random layouts: groups of random sizes and labels, random fractions and seeds."""
    rng = np.random.default_rng(0)
    for case in range(300):
        labels = [f"c{k}" for k in range(int(rng.integers(2, 5)))]
        items = [LabelledVideo(Path(f"g{g}_{n}.mp4"), str(rng.choice(labels)), f"g{g}")
                 for g in range(int(rng.integers(2, 9))) for n in range(int(rng.integers(1, 6)))]
        try:
            train, val = stratified_split(items, float(rng.uniform(0.1, 0.5)), seed=case)
        except DatasetError as exc:  # some layouts cannot put every class on both sides
            assert "cannot split" in str(exc)
            continue
        assert {i.group for i in train}.isdisjoint({i.group for i in val}), case
        assert sorted(map(str, train + val), key=str) == sorted(map(str, items), key=str)
        assert {i.label for i in train} == {i.label for i in val} == {i.label for i in items}, case


def test_groups_that_no_split_can_share_out_make_training_cross_validate(tmp_path: Path) -> None:
    """Three scenes a class, each filmed for one class only: a 20% validation split by scene
    cannot cover 4 classes, so every clip trains and cross-validation (by scene) decides; a
    single group cannot be split at all."""
    touch_videos(tmp_path, [f"c{k}/s{k}{n}_{m}.avi" for k in range(4) for n in range(3) for m in range(2)])
    splits = plan_splits(tmp_path, 0.2, seed=0, group="^(s..)_")
    assert (len(splits.train), splits.val, splits.groups()) == (24, [], {"train": 12})
    with pytest.raises(DatasetError, match="cannot split 1 group"):
        plan_splits(tmp_path, 0.2, seed=0, group="^(s)")


def test_cross_validation_folds_keep_groups_whole_and_spread_each_class() -> None:
    """A property over random layouts: every clip in one fold, no group in two, seeded; and
    with clips of their own (no groups), each class spread over the folds within one clip."""
    rng = np.random.default_rng(1)
    for case in range(300):
        labels = [f"c{k}" for k in range(int(rng.integers(2, 5)))]
        grouped = bool(case % 2)
        items = [LabelledVideo(Path(f"g{g}_{n}.mp4"), str(rng.choice(labels)), f"g{g}" if grouped else None)
                 for g in range(int(rng.integers(2, 9))) for n in range(int(rng.integers(1, 6)))]
        folds = int(rng.integers(2, 6))
        fold_of = group_folds(items, folds, seed=case)
        assert fold_of == group_folds(items, folds, seed=case) and set(fold_of) <= set(range(folds))
        owner: dict[str, int] = {}
        for item, fold in zip(items, fold_of):
            assert owner.setdefault(item.group or str(item.path), fold) == fold, case
        if not grouped:
            for label in labels:
                per_fold = [sum(f == k and i.label == label for i, f in zip(items, fold_of)) for k in range(folds)]
                assert max(per_fold) - min(per_fold) <= 1, (case, label, per_fold)


@pytest.mark.parametrize("pattern,message", [
    ("^([a-z]+", "not a valid regular expression"),
    ("^[a-z]+_", "needs a capture group"),
    ("^(x+)_", "daria_bend.avi: --group '\\^\\(x\\+\\)_' finds no group in this file name"),
])
def test_bad_group_patterns_are_clear_errors(tmp_path: Path, pattern: str, message: str) -> None:
    touch_videos(tmp_path, PEOPLE_LAYOUT)
    with pytest.raises(DatasetError, match=message):
        discover(tmp_path, group=pattern)


def write_manifest(tmp_path: Path, text: str) -> Path:
    touch_videos(tmp_path, PEOPLE_LAYOUT)
    path = tmp_path / "clips.csv"
    path.write_text(text)
    return path


def test_a_manifest_is_a_dataset_with_groups_and_splits(tmp_path: Path) -> None:
    rows = "".join(f"{name},{name.split('/')[0]},{name.split('/')[1].split('_')[0]}\n" for name in PEOPLE_LAYOUT)
    found = discover(write_manifest(tmp_path, "path,label,group\n" + rows))
    assert list(found) == ["all"] and len(found["all"]) == 15
    assert found["all"][0] == LabelledVideo(tmp_path / "bend/daria_bend.avi", "bend", "daria")
    split = discover(write_manifest(tmp_path, "path,label,split\nbend/eli_bend.avi,bend,train\n"
                                              "jump/eli_jump.avi,jump,train\nbend/ido_bend.avi,bend,val\n"
                                              "jump/ido_jump.avi,jump,test\n"))
    assert {name: [i.path.name for i in items] for name, items in split.items()} == {
        "train": ["eli_bend.avi", "eli_jump.avi"], "val": ["ido_bend.avi"], "test": ["ido_jump.avi"]}


@pytest.mark.parametrize("text,message", [
    ("file,class\nbend/eli_bend.avi,bend\n", "needs a header line path,label"),
    ("path,label\nbend/nobody_bend.avi,bend\n", "clips.csv:2: .*nobody_bend.avi: no such video file"),
    ("path,label\nbend/eli_bend.avi,\n", "clips.csv:2: needs a label"),
    ("path,label,split\nbend/eli_bend.avi,bend,train\nbend/ido_bend.avi,bend,holdout\n", "clips.csv:3: .*split 'holdout'"),
])
def test_bad_manifests_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        discover(write_manifest(tmp_path, text))


def test_data_that_is_neither_a_folder_nor_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder or manifest"):
        discover(tmp_path / "missing.csv")
    (tmp_path / "clips.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder or a .csv manifest"):
        discover(tmp_path / "clips.txt")


def test_pool_map_survives_a_worker_that_crashes_or_stalls() -> None:
    """Training's decoding and `vidclf check` run on the prediction engine's workers: an item
    whose process dies (3 kills it; 5 stalls and its watchdog ends it) gives ``died``, twice
    tried; the others their results, in order."""
    from crashing import square_or_die
    from vidclf.data import pool_map

    assert pool_map(square_or_die, list(range(9)), 2, "test", "item", died=lambda n: -n) == \
        [0, 1, 4, -3, 16, -5, 36, 49, 64]


def test_pool_map_survives_a_worker_that_dies_while_sending_its_result() -> None:
    """A worker killed halfway through sending a result (a large one is several pipe writes)
    left the pool waiting forever for the rest of the message."""
    from crashing import square_or_die
    from vidclf.data import pool_map

    assert pool_map(square_or_die, [8, 9, 10, 11], 2, "test", "item", died=lambda n: -n) == [64, 81, -10, 121]
