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
