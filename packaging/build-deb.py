#!/usr/bin/env python3
"""Builds the bao-kms-provider Debian package with dpkg-deb.

Contents (docs/install.md, "What the package installs", lists them and
tests/system/slow/package.rs checks the .deb against that table):
  /usr/bin/bao-kms-provider, /usr/bin/bao-kms-preflight   (release binaries)
  /usr/bin/kubectl-bao_kms -> bao-kms-preflight          (the kubectl plugin)
  /usr/lib/systemd/system/bao-kms-provider.service         (manifests/systemd/)
  /usr/lib/sysusers.d/openbao-kms.conf, /usr/lib/tmpfiles.d/openbao-kms.conf
  /usr/share/bao-kms-provider/kubeadm/*.sh                 (manifests/kubeadm/)
  /usr/share/man/man1/*.1.gz   generated now from the clap definitions of both
                               binaries (bao-kms-man), so they match the CLI
  /usr/share/lintian/overrides/bao-kms-provider   (packaging/deb/, each justified)
  /usr/share/doc/bao-kms-provider/  copyright, changelog.gz, README.md, the
                               operator docs, examples/values.yaml and the
                               examples/config.yaml that `init` renders from it
and the maintainer scripts in packaging/deb/ (users, groups and directories
through systemd-sysusers and systemd-tmpfiles; never a service start).

More files are one more entry in `payload()` and one more row in the
docs/install.md table; a link (a kubectl plugin name for bao-kms-preflight,
for instance) is `Entry("usr/bin/<name>", 0o777, link="bao-kms-preflight")`.

The same inputs and SOURCE_DATE_EPOCH give a byte-identical .deb: every file
is written with a fixed mode, dpkg-deb sorts the entries, owns them by root
and clamps their mtimes to SOURCE_DATE_EPOCH, and the gzip streams carry no
time or name. Runs `dpkg-deb`, `dpkg-shlibdeps` (dpkg-dev) and the binaries
being packaged, and `strip` (binutils) as dh_strip would; nothing else.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parent.parent
PACKAGE = "bao-kms-provider"
DOC_DIR = f"usr/share/doc/{PACKAGE}"
MAINTAINER = os.environ.get("DEB_MAINTAINER") or "bao-kms-provider maintainers <bao-kms-provider@example.org>"
# Always present on a systemd host; the maintainer scripts run them.
EXTRA_DEPENDS = "systemd (>= 247)"
DESCRIPTION = """\
Kubernetes KMS v2 plugin for OpenBao Transit
 bao-kms-provider runs next to kube-apiserver on every control-plane node,
 serves the KMS v2 gRPC API on a local Unix socket and forwards the
 envelope-encryption key operations to an aes256-gcm96 key in OpenBao Transit
 over TLS, failing closed when its view of the key is in doubt.
 bao-kms-preflight checks a node's provider files and the cluster's key_id
 convergence.
 .
 This package installs both binaries, the hardened systemd unit (disabled and
 stopped), its sysusers.d and tmpfiles.d entries, the kubeadm hooks, man pages
 and the operator documentation. The service starts only once the
 configuration and credentials are installed and checked (node-setup.sh
 rendered by `bao-kms-provider init`; see
 /usr/share/doc/bao-kms-provider/install.md)."""
COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: bao-kms-provider

Files: *
Copyright: {year} The bao-kms-provider authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License. You may obtain a copy of
 the License at
 .
 http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations under
 the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can
 be found in "/usr/share/common-licenses/Apache-2.0".
"""


def _image_builder():
    """images/build-image.py, for the helpers both builders share (version,
    git, SOURCE_DATE_EPOCH, the build error)."""
    spec = importlib.util.spec_from_file_location("build_image", WORKSPACE / "images" / "build-image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_image = _image_builder()
BuildError = _image.BuildError
workspace_version = _image.workspace_version
source_date_epoch = _image.source_date_epoch
git = _image.git


@dataclass(frozen=True)
class Entry:
    """One file of the package payload (directories follow from the paths)."""

    path: str  # relative to /, no leading slash
    mode: int
    data: bytes | None = None
    link: str | None = None  # symlink target instead of data


def run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, cwd=cwd, env=env)
    except OSError as e:
        raise BuildError(f"{cmd[0]}: {e}") from None
    except subprocess.CalledProcessError as e:
        raise BuildError(f"{' '.join(str(c) for c in cmd)} failed ({e.returncode}): {e.stderr.strip()}") from None
    return out.stdout


def deterministic_gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def changelog(version: str, revision: str, epoch: int) -> bytes:
    date = email.utils.formatdate(epoch, usegmt=False).replace("-0000", "+0000")
    return (
        f"{PACKAGE} ({version}) unstable; urgency=medium\n\n"
        f"  * Built from commit {revision}.\n\n"
        f" -- {MAINTAINER}  {date}\n"
    ).encode()


def stripped(binary: Path) -> bytes:
    """The binary without the compiler's .comment and .note sections, as
    dh_strip ships it (the release profile already strips symbols)."""
    if not binary.is_file():
        raise BuildError(f"{binary} not found")
    with tempfile.TemporaryDirectory(prefix="bao-kms-strip-") as tmp:
        out = Path(tmp) / binary.name
        run("strip", "--remove-section=.comment", "--remove-section=.note", "-o", out, binary)
        return out.read_bytes()


def man_pages(generator: Path) -> list[Entry]:
    with tempfile.TemporaryDirectory(prefix="bao-kms-man-") as tmp:
        run(generator, tmp)
        pages = sorted(Path(tmp).glob("*.1"))
        if not pages:
            raise BuildError(f"{generator} wrote no man pages")
        return [
            Entry(f"usr/share/man/man1/{p.name}.gz", 0o644, deterministic_gzip(p.read_bytes())) for p in pages
        ]


def example_config(provider: Path, values: Path) -> bytes:
    """config.yaml as `init` renders it from the shipped example values:
    always a configuration the packaged binary accepts."""
    with tempfile.TemporaryDirectory(prefix="bao-kms-example-") as tmp:
        out = Path(tmp) / "out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAO_KMS_PROVIDER_")}
        run(provider, "init", "--values", values, "--out", out, env=env)
        return (out / "config.yaml").read_bytes()


def payload(provider: Path, preflight: Path, generator: Path, version: str, revision: str, epoch: int) -> list[Entry]:
    entries: list[Entry] = []

    def add_file(dest: str, src: Path, mode: int) -> None:
        if not src.is_file():
            raise BuildError(f"{src} not found")
        entries.append(Entry(dest, mode, src.read_bytes()))

    def add_data(dest: str, data: bytes, mode: int = 0o644) -> None:
        entries.append(Entry(dest, mode, data))

    add_data("usr/bin/bao-kms-provider", stripped(provider), 0o755)
    add_data("usr/bin/bao-kms-preflight", stripped(preflight), 0o755)
    # kubectl finds the preflight as its plugin `kubectl bao-kms` under this name.
    entries.append(Entry("usr/bin/kubectl-bao_kms", 0o777, link="bao-kms-preflight"))
    systemd = WORKSPACE / "manifests" / "systemd"
    add_file("usr/lib/systemd/system/bao-kms-provider.service", systemd / "bao-kms-provider.service", 0o644)
    add_file("usr/lib/sysusers.d/openbao-kms.conf", systemd / "sysusers.d" / "openbao-kms.conf", 0o644)
    add_file("usr/lib/tmpfiles.d/openbao-kms.conf", systemd / "tmpfiles.d" / "openbao-kms.conf", 0o644)
    for hook in sorted((WORKSPACE / "manifests" / "kubeadm").glob("*.sh")):
        add_file(f"usr/share/{PACKAGE}/kubeadm/{hook.name}", hook, 0o755)
    add_file(f"usr/share/lintian/overrides/{PACKAGE}", WORKSPACE / "packaging" / "deb" / "lintian-overrides", 0o644)
    entries.extend(man_pages(generator))
    entries.append(Entry("usr/share/man/man1/kubectl-bao_kms.1.gz", 0o777, link="bao-kms-preflight.1.gz"))
    year = time.gmtime(epoch).tm_year
    add_data(f"{DOC_DIR}/copyright", COPYRIGHT.replace("{year}", str(year)).encode())
    add_data(f"{DOC_DIR}/changelog.gz", deterministic_gzip(changelog(version, revision, epoch)))
    add_file(f"{DOC_DIR}/README.md", WORKSPACE / "README.md", 0o644)
    for doc in sorted((WORKSPACE / "docs").glob("*.md")):
        if doc.name != "README.md":
            add_file(f"{DOC_DIR}/{doc.name}", doc, 0o644)
    values = systemd / "values.example.yaml"
    add_file(f"{DOC_DIR}/examples/values.yaml", values, 0o644)
    add_data(f"{DOC_DIR}/examples/config.yaml", example_config(provider, values))
    return entries


def shlib_depends(binaries: list[Path]) -> str:
    """`Depends` for the ELF binaries, as dpkg-shlibdeps computes it from the
    installed libraries' symbols files."""
    with tempfile.TemporaryDirectory(prefix="bao-kms-shlibs-") as tmp:
        debian = Path(tmp) / "debian"
        debian.mkdir()
        (debian / "control").write_text(f"Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n")
        out = run("dpkg-shlibdeps", "-O", *[f"-e{b}" for b in binaries], cwd=Path(tmp))
    for line in out.splitlines():
        if line.startswith("shlibs:Depends="):
            return line.split("=", 1)[1].strip()
    raise BuildError(f"dpkg-shlibdeps printed no shlibs:Depends: {out!r}")


def installed_size_kib(entries: list[Entry]) -> int:
    """What dpkg-gencontrol computes: 1 KiB per directory and symlink, each
    file rounded up to whole KiB."""
    dirs = {str(Path(e.path).parent) for e in entries}
    all_dirs = {str(p) for d in dirs for p in [Path(d), *Path(d).parents] if str(p) != "."}
    size = len(all_dirs)
    for e in entries:
        size += 1 if e.data is None else -(-len(e.data) // 1024)
    return size


def control(version: str, arch: str, depends: str, size: int) -> str:
    return (
        f"Package: {PACKAGE}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {size}\n"
        f"Depends: {depends}\n"
        "Section: admin\n"
        "Priority: optional\n"
        f"Description: {DESCRIPTION}\n"
    )


def build(staging: Path, entries: list[Entry], control_text: str, out_file: Path, epoch: int) -> None:
    for e in entries:
        dest = staging / e.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if e.link is not None:
            dest.symlink_to(e.link)
        else:
            dest.write_bytes(e.data or b"")
            dest.chmod(e.mode)
    for d in sorted({p for p in staging.rglob("*") if p.is_dir() and not p.is_symlink()}):
        d.chmod(0o755)
    staging.chmod(0o755)
    meta = staging / "DEBIAN"
    meta.mkdir(mode=0o755)
    meta.chmod(0o755)
    (meta / "control").write_text(control_text)
    (meta / "control").chmod(0o644)
    md5 = "".join(
        f"{hashlib.md5(e.data or b'').hexdigest()}  {e.path}\n" for e in sorted(entries, key=lambda e: e.path) if e.link is None
    )
    (meta / "md5sums").write_text(md5)
    (meta / "md5sums").chmod(0o644)
    for script in ("postinst", "postrm"):
        shutil.copyfile(WORKSPACE / "packaging" / "deb" / script, meta / script)
        (meta / script).chmod(0o755)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    tmp_out = out_file.with_name(f".{out_file.name}.tmp")
    run("dpkg-deb", "--root-owner-group", "-Zxz", "--build", staging, tmp_out, env=env)
    os.replace(tmp_out, out_file)


def main(argv: list[str]) -> int:
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    if not target.is_absolute():
        target = WORKSPACE / target
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--provider", type=Path, default=target / "release" / "bao-kms-provider")
    p.add_argument("--preflight", type=Path, default=target / "release" / "bao-kms-preflight")
    p.add_argument("--man-generator", type=Path, default=target / "release" / "bao-kms-man")
    p.add_argument("--out", type=Path, default=WORKSPACE / "packaging" / "out")
    p.add_argument("--version", default=None, help="default: the workspace version in Cargo.toml")
    p.add_argument("--revision", default=None, help="default: git rev-parse HEAD")
    p.add_argument(
        "--source-date-epoch",
        type=int,
        default=None,
        help="default: $SOURCE_DATE_EPOCH, else the time of the last git commit",
    )
    p.add_argument("--print-deb-path", action="store_true", help="print where the .deb is written and exit")
    args = p.parse_args(argv)

    try:
        version = args.version or workspace_version()
        arch = run("dpkg", "--print-architecture").strip()
        out_file = args.out / f"{PACKAGE}_{version}_{arch}.deb"
        if args.print_deb_path:
            print(out_file)
            return 0
        for binary in (args.provider, args.preflight, args.man_generator):
            if not binary.is_file():
                raise BuildError(f"{binary} not found; run `cargo build --release --locked --bins` first")
        epoch = source_date_epoch(args.source_date_epoch)
        revision = args.revision or git("rev-parse", "HEAD")

        entries = payload(args.provider, args.preflight, args.man_generator, version, revision, epoch)
        depends = f"{shlib_depends([args.provider, args.preflight])}, {EXTRA_DEPENDS}"
        text = control(version, arch, depends, installed_size_kib(entries))
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bao-kms-deb-") as staging:
            build(Path(staging), entries, text, out_file, epoch)
    except (BuildError, OSError) as e:
        print(f"build-deb: {e}", file=sys.stderr)
        return 1

    data = out_file.read_bytes()
    print(f"package:        {out_file}")
    print(f"sha256:         {hashlib.sha256(data).hexdigest()}")
    print(f"size:           {len(data)} bytes")
    print(f"installed size: {installed_size_kib(entries)} KiB in {len(entries)} files")
    print(f"depends:        {depends}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
