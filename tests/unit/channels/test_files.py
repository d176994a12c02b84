"""Files written by channels: which write errors are retried, the files' mode, the start-up check of a folder."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from bridge.channels import ChannelContext, build_channel
from bridge.channels.files import atomic_write, os_error
from bridge.channels.folder import FolderChannel
from bridge.channels.newsml.targets import FolderTarget
from bridge.config import ChannelSettings
from bridge.errors import ChannelRejected, ChannelUnavailable, ConfigError
from bridge.http import HttpClient, HttpRequest, HttpResponse
from bridge.kordiam.models import Element
from tests.fixtures import load

# What a full disk, a failing disk, and a network share that is briefly gone or remounted look like.
HEALING = [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT]
# What no amount of waiting fixes for this write.
FOR_GOOD = [errno.ENAMETOOLONG, errno.EFBIG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR]


@pytest.mark.parametrize("code", HEALING, ids=[errno.errorcode[c] for c in HEALING])
def test_errors_that_may_heal_are_retried(code: int) -> None:
    error = os_error(OSError(code, os.strerror(code)), "folder /x: cannot write 1-2")
    assert isinstance(error, ChannelUnavailable)
    assert str(error) == f"folder /x: cannot write 1-2: {os.strerror(code)} ({errno.errorcode[code]})"


@pytest.mark.parametrize("code", FOR_GOOD, ids=[errno.errorcode[c] for c in FOR_GOOD])
def test_errors_that_cannot_heal_are_rejections(code: int) -> None:
    assert isinstance(os_error(OSError(code, os.strerror(code)), "x"), ChannelRejected)


@pytest.mark.parametrize(
    ("code", "expected"),
    [(errno.ENOSPC, ChannelUnavailable), (errno.ESTALE, ChannelUnavailable), (errno.EFBIG, ChannelRejected)],
)
async def test_folder_write_errors_at_the_os_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, expected: type[Exception]
) -> None:
    element = Element.model_validate(load("seed001_full"))
    channel = FolderChannel("web", tmp_path)

    def failing_replace(source: str, target: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("bridge.channels.files.os.replace", failing_replace)
    with pytest.raises(expected, match=errno.errorcode[code]):
        await channel.upsert(element, element.publications[0], None)
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left behind


@pytest.mark.parametrize("replaced_by", ["a file", "a file above it"])
async def test_a_file_where_the_channels_own_folder_was_is_retried_for_every_story_not_rejected(
    tmp_path: Path, replaced_by: str
) -> None:
    """The folder itself gone wrong (EEXIST, ENOTDIR) is the whole channel's fault, never one story's: it waits like
    a share that is gone (retried, then parked once the breaker opens) instead of dead-lettering every story. A file
    in the folder where an item's file should be (EISDIR for one item) stays a rejection (above)."""
    element = Element.model_validate(load("seed001_full"))
    publication = element.publications[0]
    folder = tmp_path / "parent" / "web"
    folder.mkdir(parents=True)
    channel = FolderChannel("web", folder)
    result = await channel.upsert(element, publication, None)
    folder.joinpath(f"{result.external_id}.json").unlink()
    folder.joinpath(f"{result.external_id}.html").unlink()
    folder.rmdir()
    if replaced_by == "a file":
        folder.write_text("not a folder", encoding="utf-8")
        code = "EEXIST"
    else:
        folder.parent.rmdir()
        folder.parent.write_text("not a folder", encoding="utf-8")
        code = "ENOTDIR"
    with pytest.raises(ChannelUnavailable, match=f"is not a directory.*{code}") as raised:
        await channel.upsert(element, publication, None)
    assert not isinstance(raised.value, ChannelRejected)
    with pytest.raises(ChannelUnavailable, match="is not a directory") as deleting:
        await channel.delete(element.id, publication.id, result.external_id or "")
    assert not isinstance(deleting.value, ChannelRejected)


async def test_the_newsml_folder_target_waits_too_when_its_folder_is_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "print"
    folder.write_text("not a folder", encoding="utf-8")
    target = FolderTarget("newsml print", folder)
    for attempt in (target.write("1-2.xml", b"<x/>", {}), target.names("1-"), target.read("1-2.xml")):
        with pytest.raises(ChannelUnavailable, match="is not a directory") as raised:
            await attempt
        assert not isinstance(raised.value, ChannelRejected)


async def test_an_item_path_taken_by_a_folder_is_still_a_rejection(tmp_path: Path) -> None:
    element = Element.model_validate(load("seed001_full"))
    publication = element.publications[0]
    tmp_path.joinpath(f"{element.id}-{publication.id}.json").mkdir()
    with pytest.raises(ChannelRejected, match="EISDIR"):
        await FolderChannel("web", tmp_path).upsert(element, publication, None)


async def test_folder_files_get_the_mode_open_would_give(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    element = Element.model_validate(load("seed001_full"))
    result = await FolderChannel("web", tmp_path).upsert(element, element.publications[0], None)
    for suffix in (".json", ".html"):
        mode = stat.S_IMODE((tmp_path / f"{result.external_id}{suffix}").stat().st_mode)
        assert mode == 0o666 & ~umask, oct(mode)  # 0644 under the usual umask; mkstemp alone makes 0600


async def test_a_folder_that_cannot_be_written_is_refused_at_start_naming_its_key(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    settings = ChannelSettings.model_validate(
        {"name": "web", "type": "folder", "platforms": [1], "path": str(tmp_path / "a-file" / "web")}
    )
    with pytest.raises(ConfigError) as raised:
        build_channel(settings, ChannelContext(http=HttpClient.answering(_no_requests)), index=1)
    assert raised.value.key == "channels[1].path"
    assert (
        raised.value.problem == f"{tmp_path / 'a-file' / 'web'} is not a writable directory: Not a directory (ENOTDIR)"
    )


async def test_a_missing_folder_is_made_at_start(tmp_path: Path) -> None:
    settings = ChannelSettings.model_validate(
        {"name": "web", "type": "folder", "platforms": [1], "path": str(tmp_path / "new" / "web")}
    )
    build_channel(settings, ChannelContext(http=HttpClient.answering(_no_requests)))
    assert (tmp_path / "new" / "web").is_dir() and list((tmp_path / "new" / "web").iterdir()) == []


async def _no_requests(request: HttpRequest) -> HttpResponse:
    raise AssertionError(f"the folder channel made a request: {request.url}")


def test_an_atomic_write_makes_its_rename_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel reports success once the write returns, and the bridge records the delivery and never writes
    the file again: the rename must reach the disk too (the folder's fsync), not only the file's data, or a power
    loss right after takes the file (or its new version) with it."""
    synced: list[tuple[str, bool]] = []  # (what was synced, whether the target had its new name by then)
    real_fsync = os.fsync
    target = tmp_path / "1-2.xml"

    def recording_fsync(fd: int) -> None:
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append((kind, target.exists()))
        real_fsync(fd)

    monkeypatch.setattr("bridge.channels.files.os.fsync", recording_fsync)
    atomic_write(target, b"<item/>")
    assert target.read_bytes() == b"<item/>"
    assert synced == [("file", False), ("folder", True)]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.EBADF])
def test_a_folder_that_cannot_be_fsynced_still_gets_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Some network file systems refuse fsync on a directory: the file is in place, so that is no failure (an
    error here would retry a write that was made, or reject it for good: EINVAL is a permanent errno)."""
    real_fsync = os.fsync

    def folder_refusing_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr("bridge.channels.files.os.fsync", folder_refusing_fsync)
    atomic_write(tmp_path / "1-2.xml", b"<item/>")
    assert (tmp_path / "1-2.xml").read_bytes() == b"<item/>"


def test_a_drop_box_folder_the_bridge_cannot_read_still_gets_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hot folder with write but no read permission (``-wx``): the folder cannot be opened to be fsynced, but the
    file is in place, which must not be reported as a failure (retried for ever)."""
    real_open = os.open

    def unreadable_folders(path: str | Path, flags: int, *args: int) -> int:
        if flags & os.O_DIRECTORY:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, flags, *args)

    monkeypatch.setattr("bridge.channels.files.os.open", unreadable_folders)
    atomic_write(tmp_path / "1-2.xml", b"<item/>")
    assert (tmp_path / "1-2.xml").read_bytes() == b"<item/>"


async def test_a_folder_delete_makes_the_removal_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the delete returns the bridge records the item as retracted and never removes it again: a power loss
    must not bring a withdrawn story back into the hot folder, so the folder is fsynced after the unlinks."""
    element = Element.model_validate(load("seed001_full"))
    channel = FolderChannel("web", tmp_path)
    result = await channel.upsert(element, element.publications[0], None)
    synced: list[list[str]] = []  # the folder's entries at each fsync of the folder
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(sorted(p.name for p in tmp_path.iterdir()))
        real_fsync(fd)

    monkeypatch.setattr("bridge.channels.files.os.fsync", recording_fsync)
    await channel.delete(element.id, element.publications[0].id, result.external_id)
    assert synced == [[]]


async def test_a_delete_in_a_folder_that_is_gone_is_done(tmp_path: Path) -> None:
    channel = FolderChannel("web", tmp_path / "web")
    await channel.delete(1, 2, "1-2")  # nothing there to retract: done, not retried for ever
    assert not (tmp_path / "web").exists()
