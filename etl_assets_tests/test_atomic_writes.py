"""A raw partition is replaced whole or not at all, even when the writing process is killed.

A subprocess commits staged pages through the real `RawCsvIOManager` while the
test SIGKILLs it at several points of the commit; after each kill the partition
must still hold the previous bytes, or the complete new bytes.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl_assets.contract import RAW_TABLES
from etl_assets.io_managers.atomic import PartitionLock, PartitionLockTimeout
from etl_assets.io_managers.staging import store_page
from etl_assets.resources.api_client import PageResult
from etl_assets.resources.storage import SnapshotStorage

ASSET = "raw_tracks"
PARTITION = "2026-12-04"
ROWS_PER_PAGE = 1000
OLD_ROWS = 50
# Large enough that the commit takes a few seconds, so kills land inside it.
NEW_ROWS = 50_000
KILL_FRACTIONS = (0.05, 0.3, 0.6, 0.9, 1.1)

# Commits the staged pages of the partition the way the raw asset does: partition
# lock first, then the IO manager's dump. Prints COMMITTING just before the commit.
WRITER = """
import sys
from dagster import AssetKey, build_output_context
from etl_assets.contract import RAW_TABLES
from etl_assets.io_managers.atomic import PartitionLock
from etl_assets.io_managers.csv_io_manager import RawCsvIOManager
from etl_assets.io_managers.staging import StagedSnapshot, read_manifests
from etl_assets.resources.storage import SnapshotStorage

data_dir, asset, partition = sys.argv[1:4]
storage = SnapshotStorage(base_dir=data_dir)
staging = storage.staging_path(asset, partition)
manifests = read_manifests(staging)
rows = sum(manifest.rows for manifest in manifests.values())
target = storage.partition_path(asset, partition)
lock = PartitionLock(target, 30).acquire()
snapshot = StagedSnapshot(str(staging), RAW_TABLES[asset], rows, len(manifests), 1, manifests, 0, [], lock)
manager = RawCsvIOManager(base_path=storage.root)
print("COMMITTING", flush=True)
manager.dump_to_path(build_output_context(asset_key=AssetKey(asset)), snapshot, target)
print("DONE", flush=True)
"""


def track(track_id: int) -> dict:
    # Quotes, commas and line breaks make every row go through the CSV quoting.
    return {
        "id": track_id,
        "name": f'name "{track_id}", take',
        "artist": f"artist\n{track_id % 97}",
        "songwriters": "",
        "duration": f"{track_id % 60:02d}:{track_id % 59:02d}",
        "genres": "Rock",
        "album": f"album {track_id % 13}",
        "created_at": "2025-01-01T00:00:00.000000",
        "updated_at": "2025-06-01T12:30:00.123456",
    }


def stage_tracks(data_dir: Path, count: int) -> Path:
    """Store `count` tracks as staged pages, as a finished fetch leaves them."""
    staging = SnapshotStorage(base_dir=str(data_dir)).staging_path(ASSET, PARTITION)
    pages = -(-count // ROWS_PER_PAGE)
    staging.mkdir(parents=True, exist_ok=True)
    for page in range(1, pages + 1):
        ids = range((page - 1) * ROWS_PER_PAGE + 1, min(page * ROWS_PER_PAGE, count) + 1)
        result = PageResult("tracks", page, [track(track_id) for track_id in ids], count, pages, 1)
        store_page(staging, RAW_TABLES[ASSET], result)
    return Path(os.fspath(staging.path))


def start_writer(data_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), ASSET, PARTITION],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline().strip()
    assert line == "COMMITTING", f"writer exited before the commit with code {process.wait()}"
    return process


def run_writer(data_dir: Path) -> float:
    """Run a writer to completion and return the seconds its commit took."""
    process = start_writer(data_dir)
    started = time.monotonic()
    assert process.stdout.readline().strip() == "DONE"
    process.wait()
    return time.monotonic() - started


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def visible_parts(asset_dir: Path) -> list[str]:
    """Part files a reader can see: those outside hidden (`.`-prefixed) folders."""
    parts = []
    for path in asset_dir.rglob("part-*"):
        relative = path.relative_to(asset_dir)
        if not any(piece.startswith(".") for piece in relative.parts):
            parts.append(str(relative))
    return sorted(parts)


@pytest.fixture(scope="module")
def new_content(tmp_path_factory):
    """The bytes of a completed commit of NEW_ROWS tracks, its commit time, and pristine staged pages."""
    reference = tmp_path_factory.mktemp("reference")
    staging = stage_tracks(reference, NEW_ROWS)
    pristine = tmp_path_factory.mktemp("pristine") / "staging"
    shutil.copytree(staging, pristine)

    seconds = run_writer(reference)
    return folder_bytes(reference / ASSET / PARTITION), seconds, pristine


def test_killed_commit_keeps_partition(tmp_path, new_content):
    new, commit_seconds, pristine = new_content
    stage_tracks(tmp_path, OLD_ROWS)
    run_writer(tmp_path)
    partition = tmp_path / ASSET / PARTITION
    old = folder_bytes(partition)
    staging = Path(os.fspath(SnapshotStorage(base_dir=str(tmp_path)).staging_path(ASSET, PARTITION).path))

    outcomes = []
    for fraction in KILL_FRACTIONS:
        previous = folder_bytes(partition)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(pristine, staging)

        process = start_writer(tmp_path)
        time.sleep(fraction * commit_seconds)
        process.send_signal(signal.SIGKILL)
        process.wait()

        after = folder_bytes(partition)
        outcomes.append("old" if after == old else "new" if after == new else "mixed")
        assert after in (previous, new), f"partition changed partly after a kill at {fraction:.0%} of the commit"
        assert visible_parts(tmp_path / ASSET) == [f"{PARTITION}/part-00000.csv"]

        # The kernel drops a killed process's flock, so no stale lock blocks the next run.
        PartitionLock(SnapshotStorage(base_dir=str(tmp_path)).partition_path(ASSET, PARTITION), 1).acquire().release()

    print(f"commit {commit_seconds:.2f} s, outcomes {outcomes}")
    # At least one kill landed before the swap, so the test saw a commit cut short.
    assert outcomes[0] == "old"

    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(pristine, staging)
    run_writer(tmp_path)
    assert folder_bytes(partition) == new
    assert visible_parts(tmp_path / ASSET) == [f"{PARTITION}/part-00000.csv"]


def test_lock_second_writer_times_out(tmp_path):
    target = SnapshotStorage(base_dir=str(tmp_path)).partition_path(ASSET, PARTITION)
    first = PartitionLock(target, 1).acquire()

    started = time.monotonic()
    with pytest.raises(PartitionLockTimeout) as error:
        PartitionLock(target, 0.5).acquire()
    waited = time.monotonic() - started

    assert f"partition {target} is being written by another run" in str(error.value)
    assert waited >= 0.5

    first.release()
    second = PartitionLock(target, 0.5).acquire()
    second.release()


def test_lock_held_by_other_process(tmp_path):
    target = SnapshotStorage(base_dir=str(tmp_path)).partition_path(ASSET, PARTITION)
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time\n"
            "from upath import UPath\n"
            "from etl_assets.io_managers.atomic import PartitionLock\n"
            "lock = PartitionLock(UPath(sys.argv[1]), 5).acquire()\n"
            "print('LOCKED', flush=True)\n"
            "time.sleep(60)\n",
            str(target),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with pytest.raises(PartitionLockTimeout) as error:
            PartitionLock(target, 0.5).acquire()
        assert str(target) in str(error.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    # The holder died without releasing; the kernel released its lock.
    PartitionLock(target, 1).acquire().release()


def test_lock_clears_killed_writer_leftovers(tmp_path):
    from upath import UPath

    partition = tmp_path / "raw_tracks" / "2026-12-04"
    partial = tmp_path / "raw_tracks" / ".tmp-2026-12-04-0a1b2c"
    moved_aside = tmp_path / "raw_tracks" / ".old-2026-12-04-3d4e5f"
    other_day = tmp_path / "raw_tracks" / ".tmp-2026-12-05-6a7b8c"
    for folder in (partial, moved_aside, other_day):
        folder.mkdir(parents=True)
    (partial / "part-00000.csv").write_text("id\n1\n")
    (moved_aside / "part-00000.csv").write_text("id\n7\n")

    with PartitionLock(UPath(partition), timeout_seconds=1):
        pass

    assert not partial.exists()
    assert not moved_aside.exists()
    assert (partition / "part-00000.csv").read_text() == "id\n7\n"
    assert other_day.exists()
