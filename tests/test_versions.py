"""Interface version compatibility: the iTwin.js rules (DESIGN.md section 3).

`is_version_compatible(backend_version, frontend_version)`; the frontend is the
client, the backend the server.
"""

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tether
from tether.runtime._versions import compatibility_advice

# ---------------------------------------------------------------------------
# The table: every rule, both directions where direction matters.

TABLE = [
    # rule 1: the same version (build metadata ignored)
    ("1.2.3", "1.2.3", True),
    ("0.0.0", "0.0.0", True),
    ("0.1.0", "0.1.0", True),
    ("1.2.3+build.1", "1.2.3", True),
    ("1.2.3", "1.2.3+build.1", True),
    ("1.2.3+a", "1.2.3+b", True),
    # rule 2: a prerelease on either side needs an identical version
    ("1.2.0-dev.1", "1.2.0-dev.1", True),
    ("1.2.0-dev.1+a", "1.2.0-dev.1+b", True),
    ("1.2.0-dev.1", "1.2.0-dev.2", False),
    ("1.2.0-dev.1", "1.2.0", False),
    ("1.2.0", "1.2.0-dev.1", False),
    ("1.3.0-rc.1", "1.2.0", False),  # rule 5 would accept it without the tag
    ("1.2.1", "1.2.0-alpha", False),  # rule 5 would accept it without the tag
    ("0.1.2-dev", "0.1.1", False),  # rule 4 would accept it without the tag
    # rule 3: different major
    ("2.0.0", "1.0.0", False),
    ("1.0.0", "2.0.0", False),
    ("1.0.0", "0.9.9", False),
    ("0.9.9", "1.0.0", False),
    ("3.0.0", "2.9.0", False),
    # rule 4: major 0, patch alone may differ, and only with the client's lower
    ("0.1.2", "0.1.1", True),
    ("0.1.9", "0.1.0", True),
    ("0.0.2", "0.0.1", True),
    ("0.1.1", "0.1.2", False),  # client too new
    ("0.2.0", "0.1.0", False),  # minor differs, even with the backend newer
    ("0.1.0", "0.2.0", False),
    ("0.2.1", "0.1.0", False),
    ("0.2.0", "0.1.5", False),
    # rule 5: major >= 1
    ("1.0.3", "1.0.1", True),  # patch alone, backend newer
    ("1.0.1", "1.0.3", True),  # patch alone, client newer
    ("1.2.0", "1.1.0", True),  # client minor lower
    ("1.2.0", "1.1.5", True),  # ... and the patch is then irrelevant
    ("1.2.5", "1.1.9", True),
    ("3.5.0", "3.4.7", True),
    ("1.1.0", "1.2.0", False),  # client too new
    ("1.1.9", "1.2.0", False),
    ("2.3.4", "2.4.0", False),
]


@pytest.mark.parametrize(("backend", "frontend", "expected"), TABLE)
def test_compatibility_table(backend: str, frontend: str, expected: bool) -> None:
    """Each row pins one of the five rules for one (backend, frontend) pair."""
    assert tether.is_version_compatible(backend, frontend) is expected


MALFORMED = ["1.0", "v1.0.0", "01.0.0", "1.01.0", "1.0.01", "", "1.0.0.0", "1.0.0-", " 1.0.0", "1"]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_backend_version_raises_value_error(bad: str) -> None:
    """A backend version that is not semver 2.0.0 is a ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        tether.is_version_compatible(bad, "1.0.0")


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_frontend_version_raises_value_error(bad: str) -> None:
    """A frontend version that is not semver 2.0.0 is a ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        tether.is_version_compatible("1.0.0", bad)


# ---------------------------------------------------------------------------
# Property tests against a reference written from the rules, not from the source.

PRERELEASES = ["alpha", "dev.1", "dev.2", "rc.1"]
BUILDS = ["build.5", "abc"]


def _reference(backend: str, frontend: str) -> bool:
    """The five rules of DESIGN.md section 3, transcribed one by one."""

    def split(text: str) -> tuple[tuple[int, int, int], str | None]:
        text = text.partition("+")[0]  # build metadata never counts
        core, dash, pre = text.partition("-")
        major, minor, patch = (int(part) for part in core.split("."))
        return (major, minor, patch), (pre if dash else None)

    (b_major, b_minor, b_patch), b_pre = split(backend)
    (f_major, f_minor, f_patch), f_pre = split(frontend)
    if ((b_major, b_minor, b_patch), b_pre) == ((f_major, f_minor, f_patch), f_pre):
        return True  # rule 1
    if b_pre is not None or f_pre is not None:
        return False  # rule 2
    if b_major != f_major:
        return False  # rule 3
    patch_alone = b_minor == f_minor and b_patch != f_patch
    if b_major == 0:
        return patch_alone and f_patch < b_patch  # rule 4
    return patch_alone or f_minor < b_minor  # rule 5


SMALL = st.integers(0, 3)


@st.composite
def versions(
    draw: st.DrawFn,
    majors: st.SearchStrategy[int] = SMALL,
    prerelease: bool = True,
) -> str:
    major = draw(majors)
    minor = draw(st.integers(0, 3))
    patch = draw(st.integers(0, 3))
    text = f"{major}.{minor}.{patch}"
    if prerelease:
        pre = draw(st.none() | st.sampled_from(PRERELEASES))
        if pre is not None:
            text += f"-{pre}"
    build = draw(st.none() | st.sampled_from(BUILDS))
    if build is not None:
        text += f"+{build}"
    return text


def _strip_build(version: str) -> str:
    return version.partition("+")[0]


@settings(max_examples=300, deadline=None)
@given(versions(), versions())
def test_matches_reference_implementation(backend: str, frontend: str) -> None:
    """On every generated pair, the answer is the one the five rules give."""
    assert tether.is_version_compatible(backend, frontend) is _reference(backend, frontend)


@settings(max_examples=100, deadline=None)
@given(versions())
def test_reflexive(version: str) -> None:
    """Every version (prerelease or not, with build metadata) is compatible with itself."""
    assert tether.is_version_compatible(version, version) is True


@settings(max_examples=100, deadline=None)
@given(versions(), versions(), st.sampled_from(BUILDS), st.sampled_from(BUILDS))
def test_build_metadata_never_changes_the_answer(
    backend: str, frontend: str, backend_build: str, frontend_build: str
) -> None:
    """Adding or changing `+build` on either side gives the same answer."""
    plain = tether.is_version_compatible(_strip_build(backend), _strip_build(frontend))
    with_build = tether.is_version_compatible(
        f"{_strip_build(backend)}+{backend_build}", f"{_strip_build(frontend)}+{frontend_build}"
    )
    assert with_build is plain


@settings(max_examples=100, deadline=None)
@given(versions(majors=st.integers(1, 3), prerelease=False), st.data())
def test_released_different_minor_exactly_one_direction(a: str, data: st.DataObject) -> None:
    """Major >= 1, minors differ: exactly one of the two directions is compatible."""
    major, minor, _ = (int(p) for p in _strip_build(a).split("."))
    other_minor = data.draw(st.integers(0, 3).filter(lambda m: m != minor))
    b = f"{major}.{other_minor}.{data.draw(st.integers(0, 3))}"
    forward = tether.is_version_compatible(a, b)
    backward = tether.is_version_compatible(b, a)
    assert forward != backward
    # ... and it is the direction where the backend has the higher minor.
    assert forward is (minor > other_minor)


@settings(max_examples=100, deadline=None)
@given(versions(majors=st.integers(1, 3), prerelease=False), st.data())
def test_released_patch_alone_is_symmetric(a: str, data: st.DataObject) -> None:
    """Major >= 1, only the patch differs: compatible both ways."""
    major, minor, patch = (int(p) for p in _strip_build(a).split("."))
    other_patch = data.draw(st.integers(0, 3).filter(lambda p: p != patch))
    b = f"{major}.{minor}.{other_patch}"
    assert tether.is_version_compatible(a, b) is True
    assert tether.is_version_compatible(b, a) is True


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
def test_major_zero_patch_alone_exactly_one_direction(
    minor: int, patch: int, other_patch: int
) -> None:
    """Major 0, only the patch differs: only the direction with the client's patch lower."""
    a, b = f"0.{minor}.{patch}", f"0.{minor}.{other_patch}"
    if patch == other_patch:
        assert tether.is_version_compatible(a, b) is True
        return
    assert tether.is_version_compatible(a, b) is (other_patch < patch)
    assert tether.is_version_compatible(a, b) != tether.is_version_compatible(b, a)


@settings(max_examples=100, deadline=None)
@given(versions(majors=st.just(0), prerelease=False), versions(majors=st.just(0)))
def test_major_zero_different_minor_never_compatible(a: str, b: str) -> None:
    """Major 0 with different minors: incompatible in both directions."""
    if _strip_build(a).split(".")[1] == _strip_build(b).split(".")[1]:
        b = f"0.{(int(_strip_build(a).split('.')[1]) + 1) % 4}.0"
    assert tether.is_version_compatible(a, b) is False
    assert tether.is_version_compatible(b, a) is False


@settings(max_examples=100, deadline=None)
@given(versions(), versions())
def test_different_major_never_compatible(a: str, b: str) -> None:
    """Different majors: incompatible in both directions."""
    assume(_strip_build(a).split(".")[0] != _strip_build(b).split(".")[0])
    assert tether.is_version_compatible(a, b) is False
    assert tether.is_version_compatible(b, a) is False


@settings(max_examples=100, deadline=None)
@given(versions(), versions())
def test_prerelease_needs_identical_version(a: str, b: str) -> None:
    """With a prerelease on either side, compatible iff equal up to build metadata."""
    assume("-" in a or "-" in b)
    expected = _strip_build(a) == _strip_build(b)
    assert tether.is_version_compatible(a, b) is expected
    assert tether.is_version_compatible(b, a) is expected


# ---------------------------------------------------------------------------
# The advice in IncompatibleVersion messages


@pytest.mark.parametrize(
    ("backend", "frontend", "hint"),
    [
        ("1.0.3", "1.1.0", "pin the client to 1.0.x"),
        ("0.1.0", "0.1.1", "pin the client to 0.1.x"),
        ("2.0.0", "1.0.0", "major"),
        ("1.0.0-dev.1", "1.0.0-dev.2", "prerelease"),
        ("1.0.0", "1.0.0-dev.2", "prerelease"),
        ("1.0", "1.0.0", "not a semantic version"),
    ],
)
def test_compatibility_advice_names_both_versions_and_what_to_do(
    backend: str, frontend: str, hint: str
) -> None:
    """The advice names the interface, both versions (which is which) and a remedy."""
    advice = compatibility_advice("RobotWorldRead", backend, frontend)
    assert f"backend serves RobotWorldRead {backend}" in advice
    assert f"this client needs {frontend}" in advice
    assert hint in advice


def test_public_name_is_the_runtime_function() -> None:
    """`tether.is_version_compatible` is the one rule the runtime itself uses."""
    from tether.runtime import _versions

    assert tether.is_version_compatible is _versions.is_version_compatible
