"""`runhub render` writes previews, which may hold a real customer's name and link: only their
author may read them, whatever the umask."""
from __future__ import annotations

from click.testing import CliRunner

from helpers.files import file_mode
from runhub_loader.cli import main as cli


def render_into(out) -> list[str]:
    result = CliRunner().invoke(cli, ["render", "recovery", "--sample", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_a_new_out_folder_and_its_previews_are_private(tmp_path, umask_022):
    out = tmp_path / "previews"
    written = render_into(out)
    assert file_mode(out) == 0o700
    assert len(written) == 2 and [file_mode(p) for p in written] == [0o600, 0o600]


def test_an_existing_out_folder_keeps_its_mode(tmp_path, umask_022):
    out = tmp_path / "shared"
    out.mkdir(mode=0o755)
    written = render_into(out)
    assert file_mode(out) == 0o755 and [file_mode(p) for p in written] == [0o600, 0o600]


def test_a_preview_written_again_becomes_private_and_a_planted_symlink_is_refused(tmp_path, umask_022):
    out = tmp_path / "shared"
    out.mkdir(mode=0o755)
    old = out / "recovery.en.eml"
    old.write_bytes(b"old")
    old.chmod(0o644)
    render_into(out)
    assert file_mode(old) == 0o600 and old.read_bytes() != b"old"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    old.unlink()
    old.symlink_to(target)
    result = CliRunner().invoke(cli, ["render", "recovery", "--sample", "--out", str(out)])
    assert result.exit_code != 0 and target.read_bytes() == b"keep" and file_mode(target) == 0o644
