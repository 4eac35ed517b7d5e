"""The command line against curl's own: ``fanout fetch --transport curl`` writing
JSONL against ``curl --parallel --parallel-max C`` over the same URLs.

N small-response URLs on one host (the benchmark server, ``--server``: the
system's nginx by default, or benchmarks/fastserver.py; pinned to CPU 1, the
clients to CPU 0) are written to a file. Each contender is a fresh process
timed from start to exit:

- ``fanout_curl``: ``fanout fetch -i FILE -o out.jsonl -c C --per-host C -q
  --transport curl`` (``--per-host C``, so that the one host's limit does
  not cap it below C);
- ``curl``: ``curl --parallel --parallel-max C -K CONFIG``, the config a
  ``url``/``output = /dev/null`` pair per URL;
- ``fanout_aiohttp``: the same ``fanout fetch`` on the default transport, for
  reference.

Each round runs them as a palindrome (a shuffled order, then the reverse),
so a drift of the shared machine's speed cancels out of their ratios; the
ratios are taken within a round (speed of fanout over speed of curl: curl's
seconds over fanout's), and their median over ``--repeat`` rounds is
reported with the middle half of the rounds' ratios. fanout's records are
checked (N lines, all ok), as is curl's exit status.

    python benchmarks/cli_vs_curl.py [-n 20000] [-c 64] [--repeat 7] [--server nginx|fast]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (  # type: ignore[import-not-found]
    add_server_option,
    benchmark_server,
    check_server,
    compile_fanout,
    median_and_middle_half,
    pin_to,
)
from throughput import has_curl  # type: ignore[import-not-found]

_DEADLINE = 1800.0  # seconds for one process: a hung contender must not hang the run


def commands(
    urls_file: Path, curl_config: Path, output: Path, concurrency: int
) -> dict[str, list[str]]:
    """Each contender's command line."""
    fanout = [sys.executable, "-m", "fanout", "fetch", "-i", str(urls_file), "-o", str(output)]
    fanout += ["-c", str(concurrency), "--per-host", str(concurrency), "-q"]
    curl = ["curl", "--parallel", "--parallel-max", str(concurrency), "-s", "-S", "--fail"]
    curl += ["--no-progress-meter"]
    curl += ["-K", str(curl_config)]
    return {
        "fanout_curl": [*fanout, "--transport", "curl"],
        "curl": curl,
        "fanout_aiohttp": [*fanout, "--transport", "aiohttp"],
    }


def check_records(output: Path, n: int, name: str) -> None:
    """Exit unless ``output`` holds ``n`` records, all ok."""
    lines = output.read_bytes().splitlines()
    ok = sum(json.loads(line)["ok"] for line in lines)
    if len(lines) != n or ok != n:
        raise SystemExit(f"{name}: {ok} ok of {len(lines)} records for {n} URLs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=7, help="rounds")
    parser.add_argument("--seed", type=int, default=1, help="of the contenders' order")
    add_server_option(parser)
    args = parser.parse_args()
    check_server(args.server)
    if shutil.which("curl") is None:
        print("curl not found: apt-get install curl", file=sys.stderr)
        raise SystemExit(2)
    if not has_curl():
        print("pycurl not found: pip install 'fanout[curl]'", file=sys.stderr)
        raise SystemExit(2)
    pinning = pin_to(0)  # the processes started inherit it
    compiled = compile_fanout()
    curl_version = subprocess.run(
        ["curl", "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n", 1)[0]
    print(
        f"# CLI vs curl: n={args.n} c={args.concurrency}, {args.repeat} palindromic rounds, "
        f"{args.server} server, fresh processes; {pinning}"
    )
    print(f"# {compiled}; {curl_version}")
    seconds: dict[str, list[float]] = {}  # per round, the sum of a contender's two runs
    shuffle = random.Random(args.seed).shuffle
    with (
        benchmark_server(args.server, cpu=1) as base,
        tempfile.TemporaryDirectory() as tmp,
    ):
        urls = [f"{base}/item/{i}" for i in range(args.n)]
        urls_file, curl_config = Path(tmp) / "urls.txt", Path(tmp) / "curl.conf"
        urls_file.write_text("".join(f"{url}\n" for url in urls))
        curl_config.write_text("".join(f'url = "{url}"\noutput = "/dev/null"\n' for url in urls))
        output = Path(tmp) / "out.jsonl"
        lines = commands(urls_file, curl_config, output, args.concurrency)
        order = list(lines)
        for _ in range(args.repeat):
            shuffle(order)
            totals = dict.fromkeys(order, 0.0)
            for name in order + order[::-1]:
                output.unlink(missing_ok=True)
                start = time.perf_counter()
                done = subprocess.run(lines[name], timeout=_DEADLINE, check=False)
                totals[name] += time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(f"{name} exited with {done.returncode}")
                if name != "curl":
                    check_records(output, args.n, name)
            for name, total in totals.items():
                seconds.setdefault(name, []).append(total)
    for name, totals_ in seconds.items():
        rates = [2 * args.n / total for total in totals_]
        print(f"{name:15} {statistics.median(rates):7.0f} req/s (median; best {max(rates):.0f})")

    def ratio(a: str, b: str) -> str:
        """Speed of ``a`` over ``b``, round by round."""
        return median_and_middle_half([y / x for x, y in zip(seconds[a], seconds[b], strict=True)])

    print(f"ratio fanout fetch on curl/curl --parallel: {ratio('fanout_curl', 'curl')} (goal >= 1)")
    print(f"ratio fanout fetch on aiohttp/curl --parallel: {ratio('fanout_aiohttp', 'curl')}")
    print(f"ratio fanout fetch on curl/on aiohttp: {ratio('fanout_curl', 'fanout_aiohttp')}")


if __name__ == "__main__":
    main()
