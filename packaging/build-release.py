#!/usr/bin/env python3
"""Assemble the release kit in dist/ from what `make image` and `make deb` built.

dist/ then holds, for version V on architecture A:

  bao-kms-provider-V-linux-A.oci.tar    the OCI image archive (images/out/)
  bao-kms-provider_V_A.deb              the Debian package (packaging/out/)
  bao-kms-preflight-V.tgz               the Helm chart charts/bao-kms-preflight,
                                        packaged by Helm's engine (helm-python-sdk)
  kubectl-bao_kms-V-linux-A.tar.gz      the kubectl plugin: bao-kms-preflight as
                                        kubectl-bao_kms, and its LICENSE
  bao-kms.yaml                          the krew manifest of that archive (its sha256
                                        filled in; packaging/krew/bao-kms.yaml)
  bao-kms-provider.cdx.json             CycloneDX 1.5 SBOMs of the Rust crates
  bao-kms-preflight.cdx.json            each binary links (see sbom())
  release-manifest.json                 version, commit, SOURCE_DATE_EPOCH, the image
                                        reference and digest, every file's size and sha256
  SHA256SUMS                            sha256sum -c format, every other file

The same commit and inputs give the same bytes (so the same SHA256SUMS):
SOURCE_DATE_EPOCH is the commit time unless set; the chart is packaged from
a copy whose mtimes and modes are fixed; tar entries are root-owned with
mtime SOURCE_DATE_EPOCH and gzip headers carry no time; the SBOMs' serial
number is derived from the commit and their timestamp is SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import argparse
import datetime
import io
import tarfile
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parent.parent
CHART = WORKSPACE / "charts" / "bao-kms-preflight"
# The binaries the kit ships; one SBOM each.
SBOM_PACKAGES = ("bao-kms-provider", "bao-kms-preflight")
CDX_SPEC_VERSION = "1.5"


class BuildError(Exception):
    pass


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


image_builder = load("build_image", WORKSPACE / "images" / "build-image.py")
deb_builder = load("build_deb", WORKSPACE / "packaging" / "build-deb.py")


def run(*args: str, cwd: Path = WORKSPACE, env: dict | None = None) -> str:
    try:
        out = subprocess.run(list(args), cwd=cwd, env=env, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"{args[0]} not found") from None
    except subprocess.CalledProcessError as e:
        raise BuildError(f"{' '.join(args)} failed:\n{e.stderr.strip()}") from None
    return out.stdout


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_chart(version: str, epoch: int, out: Path) -> Path:
    """helm package of a copy of the chart with fixed mtimes and modes."""
    try:
        import helm_python
    except ImportError:
        raise BuildError("the Python package helm-python-sdk is missing: run `make deps`") from None
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / CHART.name
        shutil.copytree(CHART, copy)
        for path in sorted(copy.rglob("*"), reverse=True) + [copy]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        return Path(helm_python.package(str(copy), destination=str(out), version=version, app_version=version))


def purl(name: str, version: str) -> str:
    return f"pkg:cargo/{name}@{version}"


def lock_checksums() -> dict[tuple[str, str], str]:
    """(name, version) -> the registry's sha256 that Cargo.lock records."""
    import tomllib

    with (WORKSPACE / "Cargo.lock").open("rb") as f:
        lock = tomllib.load(f)
    return {(p["name"], p["version"]): p["checksum"] for p in lock.get("package", []) if "checksum" in p}


def sbom(metadata: dict, package: str, commit: str, epoch: int, out: Path) -> Path:
    """A CycloneDX 1.5 JSON SBOM of the crates `package`'s binary links:
    the packages reachable from it through normal (not build or dev)
    dependencies in `cargo metadata`'s resolved graph for this platform,
    each with its version, purl, license expression and Cargo.lock's
    sha256, and the dependency graph between them."""
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    root = next(p["id"] for p in metadata["packages"] if p["name"] == package and p["source"] is None)
    edges: dict[str, set[str]] = {}
    todo, seen = [root], {root}
    while todo:
        node = nodes[todo.pop()]
        deps = {d["pkg"] for d in node["deps"] if any(k["kind"] is None for k in d["dep_kinds"])}
        edges[node["id"]] = deps
        for d in deps - seen:
            seen.add(d)
            todo.append(d)
    checksums = lock_checksums()

    def ref(pid: str) -> str:
        p = packages[pid]
        return purl(p["name"], p["version"])

    def component(pid: str, kind: str) -> dict:
        p = packages[pid]
        c = {"type": kind, "bom-ref": ref(pid), "name": p["name"], "version": p["version"], "purl": ref(pid)}
        if p.get("description"):
            c["description"] = " ".join(p["description"].split())
        if p.get("license"):
            c["licenses"] = [{"expression": p["license"]}]
        if (p["name"], p["version"]) in checksums:
            c["hashes"] = [{"alg": "SHA-256", "content": checksums[(p["name"], p["version"])]}]
        return c

    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": CDX_SPEC_VERSION,
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"bao-kms-provider:{commit}:{package}")),
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {
                "components": [
                    {"type": "application", "name": "packaging/build-release.py", "description": "from cargo metadata"}
                ]
            },
            "component": component(root, "application"),
        },
        "components": sorted(
            (component(pid, "library") for pid in seen - {root}), key=lambda c: (c["name"], c["version"])
        ),
        "dependencies": sorted(
            ({"ref": ref(pid), "dependsOn": sorted(ref(d) for d in deps)} for pid, deps in edges.items()),
            key=lambda d: d["ref"],
        ),
    }
    path = out / f"{package}.cdx.json"
    path.write_text(json.dumps(bom, indent=2) + "\n")
    return path


def host_triple() -> str:
    for line in run("rustc", "-vV").splitlines():
        if line.startswith("host: "):
            return line.removeprefix("host: ")
    raise BuildError("rustc -vV names no host")


def tar_gz(files: list[tuple[str, bytes, int]], epoch: int) -> bytes:
    """A gzip'd ustar archive of (name, data, mode), root-owned, mtime epoch."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, epoch
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return deb_builder.deterministic_gzip(raw.getvalue())


def kubectl_plugin(preflight: Path, version: str, arch: str, epoch: int, out: Path) -> tuple[Path, Path]:
    """The krew archive and its manifest (packaging/krew/bao-kms.yaml filled in)."""
    archive = out / f"kubectl-bao_kms-{version}-linux-{arch}.tar.gz"
    license_text = deb_builder.COPYRIGHT.replace("{year}", str(time.gmtime(epoch).tm_year)).encode()
    archive.write_bytes(
        tar_gz([("kubectl-bao_kms", deb_builder.stripped(preflight), 0o755), ("LICENSE", license_text, 0o644)], epoch)
    )
    base_url = os.environ.get("RELEASE_BASE_URL") or f"https://releases.invalid/bao-kms-provider/v{version}"
    manifest = (WORKSPACE / "packaging" / "krew" / "bao-kms.yaml").read_text()
    for key, value in {
        "VERSION": version,
        "ARCH": arch,
        "ARCHIVE": archive.name,
        "SHA256": sha256_file(archive),
        "BASE_URL": base_url.rstrip("/"),
    }.items():
        manifest = manifest.replace(f"@{key}@", value)
    path = out / "bao-kms.yaml"
    path.write_text(manifest)
    return archive, path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=WORKSPACE / "dist")
    p.add_argument("--image-dir", type=Path, default=WORKSPACE / "images" / "out")
    p.add_argument("--deb", type=Path, default=None, help="default: where packaging/build-deb.py writes it")
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    if not target.is_absolute():
        target = WORKSPACE / target
    p.add_argument("--preflight", type=Path, default=target / "release" / "bao-kms-preflight")
    p.add_argument(
        "--source-date-epoch",
        type=int,
        default=None,
        help="default: $SOURCE_DATE_EPOCH, else the time of the last git commit",
    )
    args = p.parse_args(argv)

    try:
        version = image_builder.workspace_version()
        arch = image_builder.host_arch()
        commit = image_builder.git("rev-parse", "HEAD")
        epoch = image_builder.source_date_epoch(args.source_date_epoch)
        archive = args.image_dir / image_builder.archive_name(version, arch)
        deb = args.deb or Path(run(sys.executable, str(WORKSPACE / "packaging" / "build-deb.py"), "--print-deb-path").strip())
        for path, how in ((archive, "make image"), (deb, "make deb")):
            if not path.is_file():
                raise BuildError(f"{path} is missing: run `{how}` first")
        digest = (args.image_dir / "image-digest.txt").read_text().strip()
        image_ref = (args.image_dir / "image-ref.txt").read_text().strip()
        if not image_ref.endswith("@" + digest):
            raise BuildError(f"{args.image_dir}: image-ref.txt and image-digest.txt disagree")

        out = args.out
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        files = [shutil.copyfile(archive, out / archive.name), shutil.copyfile(deb, out / deb.name)]
        files.append(package_chart(version, epoch, out))
        files.extend(kubectl_plugin(args.preflight, version, arch, epoch, out))
        metadata = json.loads(
            run("cargo", "metadata", "--locked", "--format-version", "1", "--filter-platform", host_triple())
        )
        for package in SBOM_PACKAGES:
            files.append(sbom(metadata, package, commit, epoch, out))
        files = [Path(f) for f in files]

        manifest = {
            "name": "bao-kms-provider",
            "version": version,
            "commit": commit,
            "sourceDateEpoch": epoch,
            "image": {"reference": image_ref, "digest": digest, "archive": archive.name},
            "files": {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(files)},
        }
        manifest_path = out / "release-manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        files.append(manifest_path)

        sums = "".join(f"{sha256_file(f)}  {f.name}\n" for f in sorted(files, key=lambda f: f.name))
        (out / "SHA256SUMS").write_text(sums)
        for f in sorted(out.iterdir()):
            os.chmod(f, 0o644)
            os.utime(f, (epoch, epoch))
    except (BuildError, image_builder.BuildError, deb_builder.BuildError, OSError) as e:
        print(f"build-release: {e}", file=sys.stderr)
        return 1

    print(f"release kit:  {out} (version {version}, commit {commit}, image {digest})")
    for f in sorted(out.iterdir()):
        print(f"  {f.stat().st_size:>12}  {f.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
