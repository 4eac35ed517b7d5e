"""The Redis tests' own infrastructure: without redis-server they are skipped
with the way to install it, and under CI=true they fail instead."""

from __future__ import annotations

import pytest

from tests.redis_server import INSTALL_HINT, redis_or_skip


def test_without_redis_server_the_tests_are_skipped_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        redis_or_skip()


def test_under_ci_without_redis_server_the_tests_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        redis_or_skip()
    assert "apt-get install redis-server" in INSTALL_HINT
