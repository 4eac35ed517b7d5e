"""The public surface: a sorted __all__ whose every name resolves."""

from __future__ import annotations

import subprocess
import sys

import fanout


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert fanout.__all__ == sorted(fanout.__all__)
    for name in fanout.__all__:
        assert getattr(fanout, name) is not None
    assert set(dir(fanout)) == set(fanout.__all__)


def test_aggregate_is_the_function_even_after_its_module_is_imported() -> None:
    import fanout.aggregation

    assert callable(fanout.aggregate)
    assert fanout.aggregate is fanout.aggregation.aggregate


def test_help_does_not_import_the_http_stack() -> None:
    code = "import sys; import fanout.cli; print('aiohttp' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.strip() == b"False"


def test_result_takes_its_arguments_by_position_in_field_order() -> None:
    request = fanout.Request("http://127.0.0.1:1/a")
    failure = fanout.Failure(fanout.ErrorKind.HTTP_STATUS, "HTTP 404 Not Found")
    result = fanout.Result(
        request, 404, "http://127.0.0.1:1/b", {}, b"x", 1, None, 2, 0.5, 0.25, failure
    )
    assert (result.request, result.status, result.final_url, result.body, result.size) == (
        request,
        404,
        "http://127.0.0.1:1/b",
        b"x",
        1,
    )
    assert (result.attempts, result.elapsed, result.last_attempt, result.error) == (
        2,
        0.5,
        0.25,
        failure,
    )
    assert result.sha256 == fanout.Result(request=request, body=b"x").sha256
