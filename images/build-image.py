#!/usr/bin/env python3
"""Builds the bao-kms-provider OCI image without a container daemon.

The image has one layer holding only:
  /usr/bin/bao-kms-provider, /usr/bin/bao-kms-preflight
  the shared libraries both binaries load (as `ldd` resolves them on this
  machine) and the dynamic loader, as real files at the paths the loader uses
  /etc/ssl/certs/ca-certificates.crt
  /etc/passwd and /etc/group with the `nonroot` user and group (65532)
and nothing else: no shell, no package manager.

The output is an OCI image layout (oci-layout, index.json, blobs/sha256/...)
in one tar file, which `ctr -n k8s.io images import`, `skopeo` and `umoci`
accept. The same input files and SOURCE_DATE_EPOCH give a byte-identical
archive and so the same digest: tar entries are sorted, owned by 0:0 with
fixed modes and mtime = SOURCE_DATE_EPOCH, in ustar format (no pax records);
gzip has mtime 0 and no file name; JSON is canonical (sorted keys, no
whitespace).

Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parent.parent
DEFAULT_REPO = "localhost/bao-kms-provider"
TITLE = "bao-kms-provider"
NONROOT_ID = 65532

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# ELF e_machine -> OCI architecture, and `uname -m` -> OCI architecture.
ELF_MACHINES = {62: "amd64", 183: "arm64"}
HOST_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"


class BuildError(Exception):
    """A build input is missing or unusable; nothing is written."""


@dataclass(frozen=True)
class Entry:
    """One file or directory of the layer."""

    path: str  # relative to /, no leading slash
    mode: int
    data: bytes | None  # None for a directory


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def host_arch() -> str:
    machine = platform.machine()
    try:
        return HOST_ARCHES[machine]
    except KeyError:
        raise BuildError(f"unsupported host architecture {machine!r}") from None


def elf_arch(binary: Path) -> str:
    with binary.open("rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise BuildError(f"{binary} is not an ELF executable")
    if header[5] != 1:
        raise BuildError(f"{binary} is not little-endian")
    machine = int.from_bytes(header[18:20], "little")
    try:
        return ELF_MACHINES[machine]
    except KeyError:
        raise BuildError(f"{binary} has unsupported ELF machine {machine}") from None


def workspace_version() -> str:
    with (WORKSPACE / "Cargo.toml").open("rb") as f:
        manifest = tomllib.load(f)
    try:
        return manifest["workspace"]["package"]["version"]
    except KeyError:
        raise BuildError("Cargo.toml has no [workspace.package] version") from None


def git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(WORKSPACE), *args], check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"git {' '.join(args)} failed: {e}") from None
    return out.stdout.strip()


def source_date_epoch(flag: int | None) -> int:
    """--source-date-epoch, else $SOURCE_DATE_EPOCH, else the time of the
    last git commit (also used by packaging/build-deb.py)."""
    epoch = flag
    if epoch is None and os.environ.get("SOURCE_DATE_EPOCH"):
        try:
            epoch = int(os.environ["SOURCE_DATE_EPOCH"])
        except ValueError:
            raise BuildError("SOURCE_DATE_EPOCH is not an integer") from None
    if epoch is None:
        epoch = int(git("log", "-1", "--format=%ct"))
    if epoch < 0:
        raise BuildError("SOURCE_DATE_EPOCH must not be negative")
    return epoch


LDD_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)\s*$")
LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def shared_libraries(binary: Path) -> list[str]:
    """Absolute paths (as the loader opens them) of every library `binary`
    loads, the dynamic loader included. Fails on any unresolved library."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        raise BuildError(f"ldd {binary} failed: {text.strip()}")
    paths = []
    for line in out.stdout.splitlines():
        if "linux-vdso" in line or "linux-gate" in line:
            continue
        if m := LDD_ARROW.match(line):
            paths.append(m.group(2))
        elif m := LDD_PLAIN.match(line):
            paths.append(m.group(1))
        elif line.strip():
            raise BuildError(f"ldd {binary}: cannot resolve {line.strip()!r}")
    return paths


def read_regular(path: Path) -> bytes:
    """Contents of `path`, following symlinks (the image holds real files)."""
    real = path.resolve(strict=True)
    if not real.is_file():
        raise BuildError(f"{path} is not a regular file")
    return real.read_bytes()


def layer_entries(provider: Path, preflight: Path, ca_certs: Path) -> list[Entry]:
    files: dict[str, Entry] = {}

    def add(path: str, mode: int, data: bytes) -> None:
        rel = path.lstrip("/")
        if rel in files and files[rel].data != data:
            raise BuildError(f"two different files for /{rel}")
        files[rel] = Entry(rel, mode, data)

    add("usr/bin/bao-kms-provider", 0o755, read_regular(provider))
    add("usr/bin/bao-kms-preflight", 0o755, read_regular(preflight))
    for binary in (provider, preflight):
        for lib in shared_libraries(binary):
            # The dynamic loader is executed; libraries are only mapped.
            mode = 0o755 if "/ld-linux" in lib or "/ld64" in lib else 0o644
            add(lib, mode, read_regular(Path(lib)))
    add("etc/ssl/certs/ca-certificates.crt", 0o644, read_regular(ca_certs))
    add("etc/passwd", 0o644, PASSWD.encode())
    add("etc/group", 0o644, GROUP.encode())

    dirs = {}
    for rel in files:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            dirs[d] = Entry(d, 0o755, None)
    entries = list(dirs.values()) + list(files.values())
    # Sorted by path components: a directory comes before what it holds.
    return sorted(entries, key=lambda e: e.path.split("/"))


def deterministic_tar(entries: list[Entry], mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            info.mode = e.mode
            if e.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = tarfile.REGTYPE
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def deterministic_gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def descriptor(media_type: str, blob: bytes, **extra: object) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{sha256_hex(blob)}", "size": len(blob), **extra}


def rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Image:
    archive: bytes
    manifest_digest: str
    layer_tar_size: int
    layer_gz_size: int
    entries: list[Entry]


def build(
    provider: Path,
    preflight: Path,
    ca_certs: Path,
    *,
    version: str,
    repo: str,
    revision: str,
    epoch: int,
    arch: str,
) -> Image:
    entries = layer_entries(provider, preflight, ca_certs)
    layer_tar = deterministic_tar(entries, epoch)
    layer_gz = deterministic_gzip(layer_tar)
    created = rfc3339(epoch)
    labels = {
        "org.opencontainers.image.title": TITLE,
        "org.opencontainers.image.description": "Kubernetes KMS v2 plugin for OpenBao Transit",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "User": f"{NONROOT_ID}:{NONROOT_ID}",
            "Entrypoint": ["/usr/bin/bao-kms-provider"],
            "Cmd": ["serve", "--config=/etc/openbao-kms/config.yaml"],
            "ExposedPorts": {"8081/tcp": {}, "8082/tcp": {}},
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256_hex(layer_tar)}"]},
        "history": [{"created": created, "created_by": "images/build-image.py"}],
    }
    config_blob = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, config_blob),
        "layers": [descriptor(MEDIA_LAYER, layer_gz)],
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_blob = canonical_json(manifest)
    manifest_digest = f"sha256:{sha256_hex(manifest_blob)}"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            descriptor(
                MEDIA_MANIFEST,
                manifest_blob,
                platform={"architecture": arch, "os": "linux"},
                annotations={
                    "org.opencontainers.image.ref.name": version,
                    "io.containerd.image.name": f"{repo}:{version}",
                },
            )
        ],
    }
    layout: list[Entry] = [
        Entry("blobs", 0o755, None),
        Entry("blobs/sha256", 0o755, None),
        Entry("index.json", 0o644, canonical_json(index)),
        Entry("oci-layout", 0o644, canonical_json({"imageLayoutVersion": "1.0.0"})),
    ]
    for blob in (layer_gz, config_blob, manifest_blob):
        layout.append(Entry(f"blobs/sha256/{sha256_hex(blob)}", 0o644, blob))
    layout.sort(key=lambda e: e.path.split("/"))
    return Image(
        archive=deterministic_tar(layout, epoch),
        manifest_digest=manifest_digest,
        layer_tar_size=len(layer_tar),
        layer_gz_size=len(layer_gz),
        entries=entries,
    )


def archive_name(version: str, arch: str) -> str:
    return f"bao-kms-provider-{version}-linux-{arch}.oci.tar"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    if not target.is_absolute():
        target = WORKSPACE / target
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--provider", type=Path, default=target / "release" / "bao-kms-provider")
    p.add_argument("--preflight", type=Path, default=target / "release" / "bao-kms-preflight")
    p.add_argument("--ca-certs", type=Path, default=Path("/etc/ssl/certs/ca-certificates.crt"))
    p.add_argument("--out", type=Path, default=WORKSPACE / "images" / "out")
    p.add_argument("--repo", default=os.environ.get("IMAGE_REPO") or DEFAULT_REPO)
    p.add_argument("--version", default=None, help="default: the workspace version in Cargo.toml")
    p.add_argument("--revision", default=None, help="default: git rev-parse HEAD")
    p.add_argument(
        "--source-date-epoch",
        type=int,
        default=None,
        help="default: $SOURCE_DATE_EPOCH, else the time of the last git commit",
    )
    p.add_argument(
        "--print-archive-path",
        action="store_true",
        help="print where the archive is written and exit without building",
    )
    args = p.parse_args(argv)

    try:
        version = args.version or workspace_version()
        arch = host_arch()
        out_file = args.out / archive_name(version, arch)
        if args.print_archive_path:
            print(out_file)
            return 0
        if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*", args.repo):
            raise BuildError(f"IMAGE_REPO {args.repo!r} is not a valid repository name (lowercase, no tag)")
        for binary in (args.provider, args.preflight):
            if not binary.is_file():
                raise BuildError(f"{binary} not found; run `cargo build --release --locked --bins` first")
            if elf_arch(binary) != arch:
                raise BuildError(f"{binary} is built for {elf_arch(binary)}, this machine is {arch}")
        if not args.ca_certs.is_file():
            raise BuildError(f"{args.ca_certs} not found (Debian package ca-certificates)")
        epoch = source_date_epoch(args.source_date_epoch)
        revision = args.revision or git("rev-parse", "HEAD")

        image = build(
            args.provider,
            args.preflight,
            args.ca_certs,
            version=version,
            repo=args.repo,
            revision=revision,
            epoch=epoch,
            arch=arch,
        )
    except (BuildError, OSError) as e:
        print(f"build-image: {e}", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(out_file, image.archive)
    write_atomic(args.out / "image-digest.txt", f"{image.manifest_digest}\n".encode())
    write_atomic(args.out / "image-ref.txt", f"{args.repo}:{version}@{image.manifest_digest}\n".encode())
    print(f"archive:      {out_file}")
    print(f"image:        {args.repo}:{version}@{image.manifest_digest}")
    print(f"digest:       {image.manifest_digest}")
    print(f"archive sha256: {sha256_hex(image.archive)}")
    print(f"archive size: {len(image.archive)} bytes")
    print(f"layer size:   {image.layer_tar_size} bytes uncompressed, {image.layer_gz_size} bytes gzip")
    print(f"layer files:  {sum(1 for e in image.entries if e.data is not None)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
