"""Checkouts that share the host cache get a correct host each: their own ComfyUI instance (pack link,
models), one build per recipe at a time, and no host deleted while another process holds it.

Fake hosts and checkouts in a temporary cache: nothing is built, nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import host
import pytest

SCRIPTS = Path(host.__file__).resolve().parent


def fake_host(cache: Path, key: str, *, used_days_ago: float = 0.0) -> Path:
    """A host folder as build() leaves it, minus the 2 GB: ComfyUI's model folders and recipe.json."""
    h = cache / f"host-{key}"
    for kind in ("checkpoints", "loras", "vae_approx"):
        (h / "ComfyUI" / "models" / kind).mkdir(parents=True, exist_ok=True)
    (h / "recipe.json").write_text("{}")
    (h / host.LAST_USED).touch()
    t = time.time() - used_days_ago * 86400
    os.utime(h / host.LAST_USED, (t, t))
    return h


def checkout(tmp_path: Path, name: str) -> Path:
    c = tmp_path / name / "ComfyUI-TiPAI"
    c.mkdir(parents=True)
    (c / "__init__.py").write_text(f"NAME = {name!r}\n")
    return c


def test_two_checkouts_get_their_own_instance_and_pack_link(tmp_path):
    h = fake_host(tmp_path / "cache", "aaaa")
    one, two = checkout(tmp_path, "one"), checkout(tmp_path, "two")
    inst_one = host.install_pack(h, one)
    inst_two = host.install_pack(h, two)
    assert inst_one != inst_two and inst_one.parent == inst_two.parent == h / "instances"
    for inst, mine in ((inst_one, one), (inst_two, two)):
        link = inst / "custom_nodes" / host.PACK_LINK_NAME
        assert link.is_symlink() and link.resolve() == mine.resolve()
        assert (link / "__init__.py").read_text() == (mine / "__init__.py").read_text()
        assert os.listdir(inst / "custom_nodes") == [host.PACK_LINK_NAME]  # no other checkout's pack
        for sub in (
            "models/checkpoints",
            "models/loras",
            "models/vae_approx",
            "models/tipai",
            "input",
            "output",
            "temp",
            "user",
        ):
            assert (inst / sub).is_dir(), sub
    # installing one again (its next test run) leaves the other's link alone, and it is idempotent
    assert host.install_pack(h, one) == inst_one
    assert (inst_two / "custom_nodes" / host.PACK_LINK_NAME).resolve() == two.resolve()
    assert host.instance_dir(h, one) == inst_one
    # ComfyUI's own custom_nodes in the shared host is never touched
    assert not (h / "ComfyUI" / "custom_nodes").exists()


def test_a_moved_checkout_is_relinked_and_a_deleted_one_loses_its_instance(tmp_path):
    h = fake_host(tmp_path / "cache", "aaaa")
    one, two = checkout(tmp_path, "one"), checkout(tmp_path, "two")
    inst_one, inst_two = host.install_pack(h, one), host.install_pack(h, two)
    # a real folder where the link should be (e.g. a copied pack) is replaced by the link
    link = inst_one / "custom_nodes" / host.PACK_LINK_NAME
    link.unlink()
    link.mkdir()
    host.install_pack(h, one)
    assert link.is_symlink() and link.resolve() == one.resolve()
    # the checkout `two` is deleted: its instance goes with the next install of any checkout
    (two / "__init__.py").unlink()
    two.rmdir()
    host.install_pack(h, one)
    assert not inst_two.exists() and inst_one.is_dir()


HOLD = """
import sys
from pathlib import Path
sys.path.insert(0, {scripts!r})
import host
with host.in_use(Path({path!r})):
    print("held", flush=True)
    sys.stdin.readline()
"""


def hold_in_another_process(h: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(scripts=str(SCRIPTS), path=str(h))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_other_recipes_hosts_are_pruned_only_when_unlocked_and_unused_for_days(tmp_path):
    cache = tmp_path / "cache"
    current = fake_host(cache, "aaaa")
    old_held = fake_host(cache, "bbbb", used_days_ago=30)
    old_free = fake_host(cache, "cccc", used_days_ago=30)
    recent = fake_host(cache, "dddd", used_days_ago=1)
    abandoned = cache / "host-eeee.partial"
    abandoned.mkdir()
    holder = hold_in_another_process(old_held)
    try:
        removed = host.prune_hosts(current, older_than_days=7)
        assert set(removed) == {old_free, abandoned}
        assert old_held.is_dir(), "a host another process holds was deleted"
        assert recent.is_dir() and current.is_dir()
        # holding it also marked it used just now
        assert time.time() - (old_held / host.LAST_USED).stat().st_mtime < 60
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    os.utime(old_held / host.LAST_USED, (time.time() - 30 * 86400,) * 2)
    assert host.prune_hosts(current, older_than_days=7) == [old_held]
    assert sorted(p.name for p in cache.glob("host-*")) == ["host-aaaa", "host-dddd"]


def test_a_host_being_built_is_not_pruned(tmp_path):
    cache = tmp_path / "cache"
    current = fake_host(cache, "aaaa")
    building = cache / "host-ffff.partial"
    building.mkdir()
    with host.file_lock(host.lock_path(building, "build")):
        assert host.prune_hosts(current) == []
    assert building.is_dir()


def test_concurrent_runs_of_one_recipe_build_it_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TIPAI_CACHE", str(tmp_path / "cache"))
    builds: list[Path] = []

    def slow_fake_build(h: Path) -> None:
        builds.append(h)
        time.sleep(0.5)  # the other run arrives meanwhile and must wait, not build too
        fake_host(h.parent, h.name.removeprefix("host-"))

    monkeypatch.setattr(host, "build", slow_fake_build)
    one, two = checkout(tmp_path, "one"), checkout(tmp_path, "two")
    results: dict[str, Path] = {}
    errors: list[BaseException] = []

    def run(name: str, c: Path) -> None:
        try:
            results[name] = host.ensure_host(checkout=c)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, c)) for n, c in (("one", one), ("two", two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(builds) == 1
    assert results["one"] == results["two"] == host.host_dir()
    for c in (one, two):
        link = host.instance_dir(results["one"], c) / "custom_nodes" / host.PACK_LINK_NAME
        assert link.resolve() == c.resolve()


def test_lock_files_live_beside_the_hosts(tmp_path):
    h = tmp_path / "cache" / "host-aaaa"
    assert host.lock_path(h, "use") == tmp_path / "cache" / "locks" / "host-aaaa.use.lock"
    assert (
        host.lock_path(h.with_name("host-aaaa.partial"), "build")
        == tmp_path / "cache" / "locks" / "host-aaaa.build.lock"
    )
    with (
        host.file_lock(host.lock_path(h, "use"), shared=True) as a,
        host.file_lock(host.lock_path(h, "use"), shared=True) as b,
    ):
        assert a and b  # users share a host
        with host.file_lock(host.lock_path(h, "use"), blocking=False) as exclusive:
            assert exclusive is False


@pytest.mark.parametrize("flag", [[], ["--instance"]])
def test_the_host_command_prints_the_host_or_the_instance(tmp_path, monkeypatch, flag, capsys):
    monkeypatch.setenv("TIPAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host, "build", lambda h: fake_host(h.parent, h.name.removeprefix("host-")))
    assert host.main(flag) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == (host.instance_dir(host.host_dir()) if flag else host.host_dir())
