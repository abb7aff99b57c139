"""The rules folder on disk: hot reload, half-written files, atomic renames, deletions."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from proxy.rules.engine import RulesTransform
from proxy.rules.loader import RuleLibrary

from .test_rules_support import demo_html, page


def rule(rid: str, text: str = "hello", slot: str = "#greeting") -> str:
    return f'[[rule]]\nid = "{rid}"\npages = ["/"]\nslot = "{slot}"\nhtml = "{text}"\n'


def write(path: Path, text: str, mtime: float | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def ids(library: RuleLibrary) -> list[str]:
    return [r.id for r in library.ruleset.rules]


def test_load_ignores_drafts_and_other_files(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", rule("a"))
    write(tmp_path / "_draft.toml", rule("draft"))
    write(tmp_path / ".hidden.toml", rule("hidden"))
    write(tmp_path / "notes.txt", rule("notes"))
    (tmp_path / "sub.toml").mkdir()
    library = RuleLibrary.load(tmp_path)
    assert (ids(library), library.errors) == (["a"], ())


def test_nothing_changed_means_no_rebuild(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", rule("a"), mtime=time.time() - 60)
    library = RuleLibrary.load(tmp_path)
    version, ruleset = library.version, library.ruleset
    assert library.reload() is False and library.reload() is False
    assert library.version == version and library.ruleset is ruleset


def test_a_changed_file_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", rule("a"), mtime=time.time() - 60)
    library = RuleLibrary.load(tmp_path)
    write(tmp_path / "a.toml", rule("a") + rule("b", slot="#cta"))
    assert library.reload() is True
    assert ids(library) == ["a", "b"]
    write(tmp_path / "c.toml", rule("c", slot="#hero-headline"))
    assert library.reload() is True and ids(library) == ["a", "b", "c"]


def test_a_same_size_rewrite_within_the_same_timestamp_is_not_missed(tmp_path: Path) -> None:
    stamp = time.time()
    write(tmp_path / "a.toml", rule("a", "one"), mtime=stamp)
    library = RuleLibrary.load(tmp_path)
    write(tmp_path / "a.toml", rule("a", "two"), mtime=stamp)  # same size, same mtime
    assert library.reload() is True
    assert library.ruleset.rules[0].changes[0].content == ("two",)


def test_a_half_written_file_keeps_its_last_good_version(tmp_path: Path) -> None:
    full = rule("a") + rule("b", slot="#cta")
    write(tmp_path / "a.toml", full)
    write(tmp_path / "other.toml", rule("other", slot="#hero-headline"))
    library = RuleLibrary.load(tmp_path)
    write(tmp_path / "a.toml", full[: len(full) - 25])  # the editor is still saving
    assert library.reload() is True
    assert ids(library) == ["a", "b", "other"]  # last good a.toml still in force
    (error,) = library.errors
    assert str(error).startswith(f"{tmp_path / 'a.toml'}:9: is not valid TOML")
    assert str(error).endswith("; keeping its last good version")
    write(tmp_path / "a.toml", full + rule("c", slot="#hero-teaser"))  # the save completes
    assert library.reload() is True
    assert (ids(library), library.errors) == (["a", "b", "c", "other"], ())


def test_a_new_file_that_does_not_parse_loads_nothing_and_says_why(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "[[rule]\n")
    library = RuleLibrary.load(tmp_path)
    assert ids(library) == []
    assert [str(e) for e in library.errors] == [
        f"{tmp_path / 'a.toml'}:1: is not valid TOML: Expected ']]' at the end of an array "
        "declaration (at line 1, column 7)"]


def test_an_atomic_rename_replaces_the_file(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", rule("old"))
    library = RuleLibrary.load(tmp_path)
    write(tmp_path / ".a.toml.tmp", rule("new"))  # ignored while it is written
    assert library.reload() is False
    os.replace(tmp_path / ".a.toml.tmp", tmp_path / "a.toml")
    assert library.reload() is True and ids(library) == ["new"]


def test_a_deleted_file_takes_its_rules_away(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", rule("a"))
    write(tmp_path / "b.toml", rule("b", slot="#cta"))
    library = RuleLibrary.load(tmp_path)
    (tmp_path / "b.toml").unlink()
    assert library.reload() is True and ids(library) == ["a"]


def test_a_bad_rule_disables_only_itself(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", rule("good") + rule("bad", "<div>unclosed", "#cta")
          + rule("also-good", slot="#hero-headline"))
    library = RuleLibrary.load(tmp_path)
    assert ids(library) == ["good", "also-good"]
    assert [str(e) for e in library.errors] == [
        f'{tmp_path / "a.toml"}:10: rule "bad": html: the HTML is not self-contained: <div> '
        "is never closed"]


def test_a_broken_segment_file_keeps_rules_using_it_working(tmp_path: Path) -> None:
    write(tmp_path / "segments.toml", '[segment.everyone]\n"request.method" = "GET"\n')
    write(tmp_path / "a.toml", rule("a")[:-1] + '\naudience = { segment = "everyone" }\n')
    library = RuleLibrary.load(tmp_path)
    write(tmp_path / "segments.toml", '[segment.everyone\n')
    library.reload()
    assert ids(library) == ["a"] and len(library.errors) == 1


def test_a_missing_folder_is_an_error_until_it_appears(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    library = RuleLibrary.load(folder)
    assert ids(library) == [] and "rules folder cannot be read" in str(library.errors[0])
    folder.mkdir()
    write(folder / "a.toml", rule("a"))
    assert library.reload() is True and (ids(library), library.errors) == (["a"], ())


def test_a_thousand_rules_load(tmp_path: Path) -> None:
    for f in range(10):
        write(tmp_path / f"f{f:02d}.toml", "".join(
            rule(f"r{f}-{i}", f"text {i} for {{geo.city|you}}", f"#slot-{f}-{i}")[:-1]
            + f'\naudience = {{ "device.kind" = "mobile", "time.hour" = {{ gte = {i % 24} }} }}\n'
            for i in range(100)))
    started = time.process_time()
    library = RuleLibrary.load(tmp_path)
    elapsed = time.process_time() - started
    assert len(library.ruleset.rules) == 1000 and library.errors == ()
    assert elapsed < 10, f"loading 1,000 rules took {elapsed:.2f} s of CPU"
    assert library.ruleset.wants("shop.example.com", "/")


def test_watch_reloads_in_the_background(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", rule("a", "before"))
    library = RuleLibrary.load(tmp_path)
    transform = RulesTransform(library)
    home = demo_html("/")

    async def scenario() -> str:
        task = asyncio.create_task(library.watch(0.05))
        write(tmp_path / "a.toml", rule("a", "after!"))
        deadline = time.monotonic() + 2
        while library.ruleset.rules[0].changes[0].content != ("after!",):
            assert time.monotonic() < deadline, "not reloaded within 2 s"
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        edit = transform.apply(home, page("/"))
        return edit.html if edit else ""

    assert '<p id="greeting" data-slot="greeting">after!</p>' in asyncio.run(scenario())


HERO_EXPERIMENT = """
[[experiment]]
id = "hero"
salt = "hero.v1"
pages = ["/"]
goals = [{ id = "signup", kind = "page", url = "/thanks", primary = true }]
[[experiment.arms]]
id = "control"
weight = 0.5
[[experiment.arms]]
id = "bold"
weight = 0.5
slot = "#hero"
html = "<b>Bold</b>"
"""


def test_experiments_load_and_keep_their_last_good_version(tmp_path: Path) -> None:
    write(tmp_path / "hero.toml", HERO_EXPERIMENT + rule("a"))
    library = RuleLibrary.load(tmp_path)
    assert (ids(library), library.errors) == (["a"], ())
    (hero,) = library.ruleset.experiments
    assert (hero.id, hero.experiment.salt, [a.arm for a in hero.arms]) == (
        "hero", "hero.v1", ["control", "bold"])
    assert hero.arm_rule("control") is None and hero.arm_rule("bold").slots == ("#hero",)
    version = library.version
    write(tmp_path / "hero.toml", "[[experiment]\n")  # broken: the last good version stays
    assert library.reload() is True and library.version == version + 1
    assert library.ruleset.experiments[0].id == "hero"
