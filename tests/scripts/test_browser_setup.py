"""scripts/browser.py: chromium is left alone when present, installed with apt when missing, and apt's
package lists are refreshed only when apt has none; a failure names its step. apt-get and chromium
are stand-in scripts on PATH here, so nothing is installed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import browser
import pytest
from host import StepFailed

INSTALL = "install -y --no-install-recommends chromium"


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A chromium path that does not exist yet, and a folder for a stand-in apt-get first on PATH
    (it logs its arguments to ``apt.log``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    chromium = tmp_path / "chromium"
    monkeypatch.setattr(browser, "CHROMIUM", chromium)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return {"bin": bin_dir, "chromium": chromium, "log": tmp_path / "apt.log", "lists": tmp_path / "lists"}


def _chromium_body() -> str:
    return 'echo "Chromium 150.0.1 built on Debian"\n'


def _apt(fake, install_fails_with: str | None, needs_lists: bool) -> None:
    """apt-get: ``update`` makes the lists; ``install`` fails without lists (when ``needs_lists``), or with
    ``install_fails_with``, or else writes the chromium stand-in."""
    chromium = fake["chromium"]
    make = f"printf '%s\\n' '#!/bin/sh' '{_chromium_body().strip()}' > {chromium}; chmod +x {chromium}"
    fail = f'echo "{install_fails_with}"; exit 100' if install_fails_with else make
    no_lists = 'echo "E: Unable to locate package chromium"; exit 100' if needs_lists else ":"
    _script(
        fake["bin"] / "apt-get",
        f'echo "$*" >> {fake["log"]}\n'
        f'if [ "$1" = update ]; then touch {fake["lists"]}; exit 0; fi\n'
        f"if [ ! -e {fake['lists']} ]; then {no_lists}; fi\n"
        f"{fail}\n",
    )


def _calls(fake) -> list[str]:
    return fake["log"].read_text().splitlines() if fake["log"].exists() else []


def test_present_chromium_is_left_alone(fake):
    _apt(fake, install_fails_with=None, needs_lists=False)
    _script(fake["chromium"], _chromium_body())
    assert browser.ensure_chromium() == (fake["chromium"], "Chromium 150.0.1 built on Debian")
    assert _calls(fake) == []


def test_missing_chromium_is_installed_without_update_when_apt_has_lists(fake):
    _apt(fake, install_fails_with=None, needs_lists=False)
    fake["lists"].touch()
    path, version = browser.ensure_chromium()
    assert path == fake["chromium"] and version.startswith("Chromium 150")
    assert _calls(fake) == [INSTALL]


def test_update_runs_only_when_apt_has_no_lists(fake):
    _apt(fake, install_fails_with=None, needs_lists=True)
    path, version = browser.ensure_chromium()
    assert path.is_file() and version.startswith("Chromium 150")
    assert _calls(fake) == [INSTALL, "update", INSTALL]


def test_other_install_failure_names_the_step_and_skips_update(fake):
    fake["lists"].touch()
    _apt(fake, install_fails_with="E: dpkg was interrupted", needs_lists=False)
    with pytest.raises(StepFailed) as info:
        browser.ensure_chromium()
    assert info.value.step == "install chromium" and "dpkg was interrupted" in str(info.value)
    assert _calls(fake) == [INSTALL]


def test_without_root_it_says_what_to_run(fake, monkeypatch):
    _apt(fake, install_fails_with=None, needs_lists=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(StepFailed, match="apt-get install -y --no-install-recommends chromium"):
        browser.ensure_chromium()
    assert _calls(fake) == []


def test_launch_flags_keep_chromium_off_the_network():
    for flag in ("--disable-background-networking", "--disable-component-update", "--disable-sync", "--headless"):
        assert flag in browser.LAUNCH_ARGS
