"""lab/bin/lab-images: the docker-archive writer behind the lab's node images."""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT

LOADER = importlib.machinery.SourceFileLoader("lab_images", str(REPO_ROOT / "lab" / "bin" / "lab-images"))
SPEC = importlib.util.spec_from_loader("lab_images", LOADER)
assert SPEC is not None
lab_images = importlib.util.module_from_spec(SPEC)
sys.modules["lab_images"] = lab_images  # dataclasses look their module up there
LOADER.exec_module(lab_images)


@pytest.fixture()
def binaries(tmp_path: Path) -> tuple[Path, Path]:
    nats = tmp_path / "nats-server"
    nats.write_text("#!/bin/sh\necho 'nats-server: v2.99.7'\n")
    nats.chmod(0o755)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF busybox stand-in")
    busybox.chmod(0o755)
    return nats, busybox


def read_archive(data: bytes) -> tuple[list[dict], dict, dict[str, tarfile.TarInfo], dict[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(outer.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        layer_bytes = outer.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    members: dict[str, tarfile.TarInfo] = {}
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as layer:
        for member in layer.getmembers():
            members[member.name] = member
            if member.isfile():
                contents[member.name] = layer.extractfile(member).read()  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]
    return manifest, config, members, contents


def test_the_nats_image_runs_nats_server_with_a_shell_beside_it(binaries: tuple[Path, Path]) -> None:
    nats, busybox = binaries
    image = next(i for i in lab_images.lab_images(nats, busybox) if i.repo.endswith("/nats"))
    assert image.reference == "tapio-lab.local/nats:2.99.7"  # the tag is the binary's own version
    manifest, config, members, contents = read_archive(lab_images.docker_archive(image))
    assert manifest[0]["RepoTags"] == ["tapio-lab.local/nats:2.99.7"]
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/nats-server"]
    assert "PATH=/usr/local/bin:/bin" in config["config"]["Env"]  # the preStop hook calls `nats-server`
    assert contents["usr/local/bin/nats-server"] == nats.read_bytes()
    assert members["usr/local/bin/nats-server"].mode == 0o755
    assert contents["bin/busybox"] == busybox.read_bytes()
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["usr"].isdir() and members["usr/local/bin"].isdir() and members["tmp"].mode == 0o1777


def test_the_pause_image_only_waits(binaries: tuple[Path, Path]) -> None:
    nats, busybox = binaries
    image = next(i for i in lab_images.lab_images(nats, busybox) if i.repo.endswith("/pause"))
    _, config, members, _ = read_archive(lab_images.docker_archive(image))
    assert config["config"]["Entrypoint"] == ["/bin/sleep", "2147483647"]
    assert members["bin/sleep"].linkname == "busybox"
    assert "usr/local/bin/nats-server" not in members


def test_archives_are_reproducible_and_cached_by_content(binaries: tuple[Path, Path], tmp_path: Path) -> None:
    nats, busybox = binaries
    image = lab_images.lab_images(nats, busybox)[0]
    assert lab_images.docker_archive(image) == lab_images.docker_archive(image)
    first = lab_images.write_cached(image, tmp_path / "cache")
    assert lab_images.write_cached(image, tmp_path / "cache") == first
    busybox.write_bytes(b"\x7fELF another busybox")  # new content: a new archive beside the old one
    second = lab_images.write_cached(lab_images.lab_images(nats, busybox)[0], tmp_path / "cache")
    assert second != first and first.exists() and second.exists()


def test_a_missing_binary_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        lab_images.main(["--cache", str(tmp_path), "--nats-server", str(tmp_path / "absent"), "--busybox", "/bin/sh"])
    assert f"{tmp_path / 'absent'} is not an executable file" in capsys.readouterr().err
