"""The pure part of delta uploads: manifests, listings, and which files a host can link."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import replace

import pytest

from services.agent import delta, manifest
from services.agent.manifest import Entry, Manifest

T0 = 1_700_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def f(path: str, body: bytes, mode: int = 0o644, mtime: int = T0) -> Entry:
    return Entry(path, "f", mode, len(body), mtime, sha(body))


def m(*entries: Entry) -> Manifest:
    return Manifest({e.path: e for e in entries})


def listing_of(man: Manifest, **changes: delta.Listed | None) -> dict[str, delta.Listed | None]:
    """A host listing of a tree exactly as `man` says it was extracted, with some paths changed."""
    listed = delta.parse_listing(delta.expected_listing(man))
    listed.update(changes)
    return listed


BASE = m(
    Entry("lib", "d", 0o755),
    f("lib/a.py", b"a"),
    f("lib/b.py", b"b"),
    f("run.sh", b"#!/bin/sh\n", 0o755),
    Entry("link", "l", 0, target="lib/a.py"),
)


def test_an_unchanged_tree_links_every_file_and_sends_none():
    # a fresh checkout: the same files with new mtimes
    new = Manifest({p: replace(e, mtime=T0 + 60) if e.kind == "f" else e for p, e in BASE.entries.items()})
    plan = delta.plan(new, BASE, listing_of(BASE))
    assert plan.link == ["lib/a.py", "lib/b.py", "run.sh"] and plan.send == [] and plan.send_bytes == 0
    # linked files keep the base's mtime, and the host's listing must say so
    assert plan.mtimes == {"lib/a.py": T0, "lib/b.py": T0, "run.sh": T0}
    assert "lib/a.py\tf\t644\t1\t1700000000\t\n" in plan.expected
    assert delta.as_assembled(new, plan).entries["lib/a.py"].mtime == T0


def test_changed_new_and_deleted_files_and_mode_changes():
    new = m(
        Entry("lib", "d", 0o755),
        f("lib/a.py", b"A changed"),
        f("run.sh", b"#!/bin/sh\n", 0o700),  # same bytes, another mode: a link would chmod the base
        f("lib/new.py", b"new"),
        Entry("link", "l", 0, target="lib/new.py"),
    )  # lib/b.py deleted
    plan = delta.plan(new, BASE, listing_of(BASE))
    assert plan.link == []
    assert plan.send == ["lib/a.py", "lib/new.py", "run.sh"]
    assert plan.send_bytes == len(b"A changed") + 3 + len(b"#!/bin/sh\n")
    assert "lib/b.py" not in plan.expected
    assert "link\tl\t0\t0\t0\tlib/new.py\n" in plan.expected


def test_files_changed_on_the_host_since_extraction_are_sent_not_linked():
    touched = delta.Listed("f", 0o644, 1, T0 + 5, "")  # written in place by a hook
    replaced = delta.Listed("l", 0, 0, 0, "/srv/app/shared/run.sh")  # link_shared
    plan = delta.plan(BASE, BASE, listing_of(BASE, **{"lib/a.py": touched, "run.sh": replaced}))
    assert plan.link == ["lib/b.py"]
    assert plan.send == ["lib/a.py", "run.sh"] and plan.dirty == ["lib/a.py", "run.sh"]
    missing = dict(listing_of(BASE))
    del missing["lib/b.py"]
    assert delta.plan(BASE, BASE, missing).send == ["lib/b.py"]


def test_a_name_listed_twice_is_never_trusted():
    text = delta.expected_listing(BASE)
    twice = text + "lib/a.py\tf\t644\t1\t1700000000\t\n"
    assert delta.parse_listing(twice)["lib/a.py"] is None
    assert "lib/a.py" in delta.plan(BASE, BASE, delta.parse_listing(twice)).send
    assert delta.parse_listing("garbage\nx\tf\tzz\t1\t2\t\n") == {"x": None}


def test_expected_listing_is_in_byte_order_like_sort_in_the_c_locale():
    man = m(f("a-b", b""), f("a/b", b""), f("B", b""), f("é", b""), Entry("a", "d", 0o755))
    paths = [line.split("\t")[0] for line in delta.expected_listing(man).splitlines()]
    assert paths == ["B", "a", "a-b", "a/b", "é"]


def test_choose_base_prefers_the_same_digest_then_the_named_then_current_then_newest():
    cands = [("r3", "c" * 64), ("r2", "b" * 64), ("r1", "a" * 64)]
    assert delta.choose_base(cands, "a" * 64, "r3", "r2") == ("r1", "a" * 64)
    assert delta.choose_base(cands, "d" * 64, "r1", "r2") == ("r1", "a" * 64)
    assert delta.choose_base(cands, "d" * 64, None, "r2") == ("r2", "b" * 64)
    assert delta.choose_base(cands, "d" * 64, "gone", "gone") == ("r3", "c" * 64)
    assert delta.choose_base([], "d" * 64, None, None) is None


# --- manifests -------------------------------------------------------------------------------
def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, body in members:
            info.size = len(body) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.mode, i.mtime, i.linkname = kind, mode, T0, link
    return i


def test_a_manifest_lists_files_dirs_symlinks_and_implicit_parents_and_round_trips():
    data = tar_of(
        (info("./"), b""),
        (info("lib/x/a.py"), b"a"),
        (info("bin", tarfile.DIRTYPE, 0o750), b""),
        (info("bin/run", mode=0o4755), b"#!"),
        (info("cur", tarfile.SYMTYPE, link="lib/x"), b""),
    )
    man = manifest.from_archive(io.BytesIO(data), "none")
    assert man.entries["lib/x/a.py"] == f("lib/x/a.py", b"a")
    assert man.entries["lib"] == Entry("lib", "d", manifest.IMPLICIT_DIR_MODE)
    assert man.entries["bin"] == Entry("bin", "d", 0o750)
    assert man.entries["bin/run"].mode == 0o4755
    assert man.entries["cur"] == Entry("cur", "l", 0, target="lib/x")
    assert set(man.entries) == {"lib", "lib/x", "lib/x/a.py", "bin", "bin/run", "cur"}
    assert manifest.decode(manifest.encode(man)) == man


@pytest.mark.parametrize(
    "members",
    [
        [(info("../evil"), b"x")],
        [(info("a\nb"), b"x")],
        [(info("a"), b"1"), (info("a"), b"2")],
        [(info("hard", tarfile.LNKTYPE, link="a"), b"")],
        [(info("dir", tarfile.SYMTYPE, link="/etc"), b""), (info("dir/passwd"), b"x")],
    ],
    ids=["dotdot", "newline", "twice", "hardlink", "through-a-symlink"],
)
def test_archives_a_delta_cannot_represent_are_refused(members):
    with pytest.raises(manifest.Unsupported):
        manifest.from_archive(io.BytesIO(tar_of(*members)), "none")


@pytest.mark.parametrize(
    "text",
    [
        "not a manifest\n",
        "ferry-manifest 1\nf\t644\t1\t2\tnot-a-digest\ta\n",
        "ferry-manifest 1\nd\t755\t0\t0\t-\t../up\n",
        "ferry-manifest 1\nd\t755\t0\t0\t-\ta\nd\t755\t0\t0\t-\ta\n",
        "ferry-manifest 1\nx\t755\t0\t0\t-\ta\n",
    ],
)
def test_a_malformed_manifest_from_a_host_is_refused(text):
    import gzip

    with pytest.raises(manifest.Unsupported):
        manifest.decode(gzip.compress(text.encode()))
    with pytest.raises(manifest.Unsupported):
        manifest.decode(b"not gzip")


def test_the_cache_reads_each_artifact_once_and_checks_its_digest():
    data = tar_of((info("a"), b"a"))
    opened = []

    def open_stream() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(data)

    cache = manifest.ManifestCache()
    first = cache.of_artifact(sha(data), "none", open_stream)
    assert cache.of_artifact(sha(data), "none", open_stream) is first and len(opened) == 1
    with pytest.raises(manifest.Unsupported):
        cache.of_artifact("0" * 64, "none", open_stream)


def test_the_cache_keeps_manifests_on_disk_beside_the_artifacts(tmp_path):
    data = tar_of((info("a"), b"a"))
    manifest.ManifestCache().of_artifact(sha(data), "none", lambda: io.BytesIO(data), tmp_path)
    assert (tmp_path / f"{sha(data)}.manifest.gz").is_file()
    fresh = manifest.ManifestCache()  # another process
    assert fresh.get(sha(data), tmp_path) == m(f("a", b"a"))
