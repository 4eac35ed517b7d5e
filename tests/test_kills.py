"""Kill -9 costs at most what was in flight (issue 17): a resumed run sends
again only the requests in flight and one small commit group's worth, at most
2 x concurrency + 64 per kill, and removes the temporaries the killed run left."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from fanout.demo import ServerThread
from fanout.errors import SinkError
from fanout.output.files import STAGING, staging_dir
from tests.durability import FANOUT, check_saved_files, count_lines, fanout, records, wait_for

N_URLS = 3000


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [8, 64])
def test_a_kill_9_costs_at_most_the_requests_in_flight_and_one_group(
    tmp_path: Path, concurrency: int
) -> None:
    output, pages = tmp_path / "out.jsonl", tmp_path / "pages"
    command = [*FANOUT, "fetch", "-i", "urls.txt", "-o", str(output), "--journal", "run.db"]
    command += ["--out-dir", str(pages), "-c", str(concurrency), "--per-host", str(concurrency)]
    command += ["-q"]
    rng = random.Random(concurrency)
    with ServerThread() as server:  # answers at once: results come as fast as they can
        urls = [f"{server.url}/pages/{i}" for i in range(N_URLS)]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        kills = 0
        for threshold in sorted(rng.sample(range(100, N_URLS - 300), 3)):
            process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
            wait_for(lambda t=threshold: count_lines(output) >= t, process)  # type: ignore[misc]
            if process.poll() is None:
                process.kill()
                kills += 1
            process.communicate(timeout=30)
            # a kill may leave temporaries, but only where the next run removes them
            assert not [p for p in pages.rglob("*.tmp") if p.parent.name != STAGING]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        counts = [server.stats.count(url.split(server.url, 1)[1]) for url in urls]
    rows = records(output.read_bytes())
    assert sorted(str(row["key"]) for row in rows) == sorted(urls)  # one line per key
    check_saved_files(rows)
    assert not (pages / STAGING).exists()
    assert kills >= 2
    assert min(counts) == 1
    refetched = sum(count - 1 for count in counts)
    assert refetched <= kills * (2 * concurrency + 64), (refetched, kills)


def test_a_run_removes_the_temporaries_a_killed_run_left(
    server_thread: str, tmp_path: Path
) -> None:
    staging = tmp_path / "pages" / STAGING
    staging.mkdir(parents=True)
    (staging / "page-3f2a.tmp").write_bytes(b"half a body")  # as a kill -9 mid-save leaves it
    (staging / "lock").write_bytes(b"")
    done = fanout("fetch", f"{server_thread}/pages/1", "--out-dir", str(tmp_path / "pages"), "-q")
    assert done.returncode == 0, done.stderr
    (row,) = records(done.stdout)
    assert Path(str(row["path"])).is_file()
    assert not staging.exists()


def test_the_temporaries_of_a_run_still_going_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / STAGING).mkdir()
    (tmp_path / STAGING / "stale.tmp").write_bytes(b"left by a killed run")
    with staging_dir(tmp_path) as first:
        assert sorted(p.name for p in first.iterdir()) == ["lock"]  # alone: cleaned
        (first / "busy.tmp").write_bytes(b"being written")
        with staging_dir(tmp_path) as second:
            assert second == first
            assert (first / "busy.tmp").exists()  # another run holds the lock: kept
        assert (first / "busy.tmp").exists()  # not the last one out: nothing removed
    assert not (tmp_path / STAGING).exists()  # the last one out removes the directory


def test_a_staging_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_bytes(b"not a temporary")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / STAGING).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SinkError, match="symlink"), staging_dir(tmp_path / "out"):
        pass
    assert (elsewhere / "precious").read_bytes() == b"not a temporary"
