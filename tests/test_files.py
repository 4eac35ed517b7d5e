"""Tests for fanout.output.files: safe relative paths and atomic writes."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.errors import ConfigError, SinkError
from fanout.output.files import safe_relpath, write_atomic

HOSTILE = [
    "http://h.example/../../etc/passwd",
    "http://h.example/%2e%2e/%2e%2e/etc/passwd",
    "http://h.example/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "http://h.example/a/%2e/b/./c/../d",
    "http://h.example/..%5c..%5cwindows",
    "http://h.example//////",
    "http://h.example/a%00b/c%0a%0d",
    "http://h.example/\x1b[31mred",
    "http://h.example/" + "x" * 5000,
    "http://h.example/" + "a/" * 500 + "z",
    "http://h.example/" + "é" * 300,
    "http://h.example/" + "\U0001f600" * 100 + "?q=" + "\U0001f600" * 100,
    "http://h.example/CON/nul.txt",
    "http://h.example/con." + "a" * 73 + "-0123456789abcdef.bin/x",
    "http://h.example/.git/config",
    "http://h.example/.hidden",
    "http://h.example/a.b.c.",
    "http://h.example/ trailing /",
    "http://" + "h" * 250 + ".example/",
    "http://[::1]:8080/x",
    "http://u:secret@h.example/x",
    "http://h.example/?",
    "http://h.example?q=1",
    "http://h.example/a?../../x=1#../../y",
    "http://h.example/\u202egnp.exe",
    "http://h.example/a\\b",
    "/../../etc/passwd",
    "../../etc/passwd",
    "",
    ".",
    "..",
    "\x00",
    "http://[::1",
    "http://h.example:99999/x",
    "http://h.example/\ud800",
]


def assert_safe(relpath: str, *, max_component: int = 100, max_path: int = 240) -> None:
    assert relpath
    assert not relpath.startswith("/")
    assert len(relpath.encode()) <= max_path
    for part in relpath.split("/"):
        assert part not in ("", ".", "..")
        assert not part.startswith(".")
        assert "\\" not in part
        assert len(part.encode()) <= max_component
        assert all(unicodedata.category(c)[0] in "LNM" or c in "-_.=+,~@" for c in part), part
        assert not part.endswith((".", " "))
    assert PurePosixPath(relpath).parts == tuple(relpath.split("/"))


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_get_safe_paths(url: str, tmp_path: Path) -> None:
    relpath = safe_relpath(url)
    assert_safe(relpath)
    assert "secret" not in relpath
    assert (tmp_path / relpath).resolve().is_relative_to(tmp_path.resolve())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/docs/guide.html", r"example.com/docs/guide-[0-9a-f]{16}\.html"),
        ("https://Example.COM:8443/a/b.JSON", r"example.com_8443/a/b-[0-9a-f]{16}\.json"),
        ("https://example.com:443/x", r"example.com/x-[0-9a-f]{16}\.bin"),
        ("https://example.com/", r"example.com/index-[0-9a-f]{16}\.html"),
        ("https://example.com", r"example.com/index-[0-9a-f]{16}\.html"),
        ("https://example.com/dir/", r"example.com/dir/index-[0-9a-f]{16}\.html"),
        ("https://example.com/s?q=a b&n=1", r"example.com/s__q=a_b_n=1-[0-9a-f]{16}\.bin"),
        ("https://example.com/%2e%2e/x", r"example.com/x-[0-9a-f]{16}\.bin"),
        ("https://example.com/a%2Fb/c", r"example.com/a_b/c-[0-9a-f]{16}\.bin"),
        ("https://example.com/caf%C3%A9/", r"example.com/café/index-[0-9a-f]{16}\.html"),
        ("https://example.com/CON/x", r"example.com/_CON/x-[0-9a-f]{16}\.bin"),
        ("https://example.com/.git/x", r"example.com/_git/x-[0-9a-f]{16}\.bin"),
        ("https://[::1]:8080/x", r"__1_8080/x-[0-9a-f]{16}\.bin"),
        ("https://u:pw@example.com/x", r"example.com/x-[0-9a-f]{16}\.bin"),
    ],
)
def test_readable_names(url: str, expected: str) -> None:
    relpath = safe_relpath(url)
    assert re.fullmatch(expected, relpath), relpath


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [
        ("text/html; charset=utf-8", "html"),
        ("application/json", "json"),
        ("application/problem+json", "json"),
        ("application/atom+xml", "xml"),
        ("image/png", "png"),
        ("application/x-unknown", "bin"),
        (None, "bin"),
        ("", "bin"),
    ],
)
def test_extension_from_content_type(content_type: str | None, ext: str) -> None:
    assert safe_relpath("http://h.example/x", content_type=content_type).endswith("." + ext)
    assert safe_relpath("http://h.example/x.txt", content_type=content_type).endswith(".txt")


def test_urls_that_sanitise_alike_get_different_paths() -> None:
    groups = [
        ["http://h.example/a b", "http://h.example/a_b", "http://h.example/a%20b"],
        ["http://h.example/A", "http://h.example/a", "HTTP://H.EXAMPLE/a"],
        ["http://h.example/x?a=1", "http://h.example/x?a=2", "http://h.example/x"],
        ["http://h.example/x#one", "http://h.example/x#two"],
        ["http://h.example/" + "y" * 300 + "1", "http://h.example/" + "y" * 300 + "2"],
        ["http://h.example/x/", "http://h.example/x", "http://h.example/x/index"],
    ]
    for group in groups:
        paths = {safe_relpath(url).lower() for url in group}
        assert len(paths) == len(group), group


def test_a_directory_never_takes_a_file_name(tmp_path: Path) -> None:
    first = safe_relpath("http://h.example/p")
    name = first.split("/")[-1]
    second = safe_relpath(f"http://h.example/{name.upper()}/q")
    assert second.split("/")[1].lower() != name.lower()
    write_atomic(tmp_path, first, b"1")
    write_atomic(tmp_path, second, b"2")
    assert (tmp_path / first).read_bytes() == b"1"


def test_limits_are_checked_and_respected() -> None:
    url = "http://h.example/" + "/".join(["segment" * 10] * 10) + "?" + "q" * 300
    assert_safe(safe_relpath(url, max_component=40, max_path=81), max_component=40, max_path=81)
    with pytest.raises(ConfigError, match="max_component"):
        safe_relpath(url, max_component=10)
    with pytest.raises(ConfigError, match="max_path"):
        safe_relpath(url, max_component=100, max_path=150)


_url_text = st.builds(
    lambda scheme, host, segments, query, fragment: (
        f"{scheme}://{host}/{'/'.join(segments)}{query}{fragment}"
    ),
    st.sampled_from(["http", "https", "HTTP", "ftp"]),
    st.from_regex(r"[a-zA-Z0-9.-]{1,30}(:[0-9]{1,5})?", fullmatch=True),
    st.lists(
        st.one_of(
            st.sampled_from(["..", ".", "", "%2e%2e", "%2E%2e%2f..", "%00", "%2f", "con"]),
            st.text(max_size=30),
        ),
        max_size=8,
    ),
    st.one_of(st.just(""), st.text(max_size=40).map(lambda q: "?" + q)),
    st.one_of(st.just(""), st.text(max_size=10).map(lambda f: "#" + f)),
)
_any_url = st.one_of(_url_text, st.text(max_size=300))


@settings(max_examples=400)
@given(_any_url, st.sampled_from([(100, 240), (40, 81), (60, 300)]))
def test_safe_relpath_properties(url: str, limits: tuple[int, int]) -> None:
    max_component, max_path = limits
    relpath = safe_relpath(url, max_component=max_component, max_path=max_path)
    assert_safe(relpath, max_component=max_component, max_path=max_path)
    assert safe_relpath(url, max_component=max_component, max_path=max_path) == relpath
    root = Path("/srv/out")
    assert os.path.normpath(root / relpath).startswith("/srv/out/")


@given(_any_url, _any_url)
def test_different_urls_get_different_paths(first: str, second: str) -> None:
    if first != second:
        assert safe_relpath(first) != safe_relpath(second)
        assert safe_relpath(first).lower() != safe_relpath(second).lower()


@settings(max_examples=50, deadline=None)
@given(st.lists(_any_url, min_size=1, max_size=5, unique=True))
def test_written_files_stay_under_root_and_do_not_clash(urls: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n, url in enumerate(urls):
            path = write_atomic(root, safe_relpath(url), str(n).encode())
            assert path.is_relative_to(root.resolve())
        for n, url in enumerate(urls):
            assert (root / safe_relpath(url)).read_bytes() == str(n).encode()
        leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == []


# --- write_atomic -----------------------------------------------------------------------------


def test_write_atomic_creates_parents_and_replaces(tmp_path: Path) -> None:
    path = write_atomic(tmp_path, "h.example/a/b/c.bin", b"one")
    assert path == (tmp_path / "h.example/a/b/c.bin").resolve()
    assert path.read_bytes() == b"one"
    write_atomic(tmp_path, "h.example/a/b/c.bin", b"two", fsync=True)
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.bin"]


def test_write_atomic_creates_root(tmp_path: Path) -> None:
    root = tmp_path / "new" / "root"
    assert write_atomic(root, "x.bin", b"").read_bytes() == b""


def test_write_atomic_uses_the_umask_mode(tmp_path: Path) -> None:
    path = write_atomic(tmp_path, "f.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    "relpath", ["../x", "a/../../x", "/etc/passwd", "", ".", "a/..", "x\x00y", "a/../.."]
)
def test_write_atomic_refuses_paths_outside_root(tmp_path: Path, relpath: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(SinkError, match="refusing to write"):
        write_atomic(root, relpath, b"x")
    assert list(tmp_path.rglob("x")) == []


def test_write_atomic_refuses_a_symlink_out_of_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "h.example").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SinkError, match="outside"):
        write_atomic(root, "h.example/x.bin", b"x")
    assert list(outside.iterdir()) == []


def test_write_atomic_error_names_the_path_and_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "h.example").write_bytes(b"a file where a directory should be")
    with pytest.raises(SinkError, match=r"cannot write .*h\.example/x\.bin"):
        write_atomic(tmp_path, "h.example/x.bin", b"x")
    (tmp_path / "d" / "x.bin").mkdir(parents=True)
    (tmp_path / "d" / "x.bin" / "inside").write_bytes(b"")
    with pytest.raises(SinkError, match=r"cannot write .*d/x\.bin'"):
        write_atomic(tmp_path, "d/x.bin", b"x")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["x.bin"]


def test_write_atomic_cleans_up_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(SinkError, match="No space left on device"):
        write_atomic(tmp_path, "h.example/x.bin", b"x")
    assert list((tmp_path / "h.example").iterdir()) == []


def test_names_tell_passwords_apart_without_a_fast_hash_of_them() -> None:
    urls = ["http://bob:pw1@h.example/a", "http://bob:pw2@h.example/a", "http://h.example/a"]
    names = [safe_relpath(url) for url in urls]
    assert len(set(names)) == 3
    for url, name in zip(urls, names, strict=True):
        assert "pw" not in name
        plain = hashlib.sha256(url.encode()).hexdigest()[:16]
        assert (plain in name) == ("@" not in url)  # no SHA-256 of a password to guess from
    assert safe_relpath(urls[0]) == names[0]  # the same name in every run
