"""`imagegen bundle pack|verify|disk`: argument parsing and printing only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imagegen.bundle.format import RUNTIMES
from imagegen.bundle.pack import (
    BundleError,
    PackSpec,
    make_disk,
    pack_bundle,
    verify_bundle,
)

EXIT_BAD_INPUT = 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bundle = subparsers.add_parser(
        "bundle", help="offline Kubernetes bundle: pack, verify, make a disk image",
        description="Build, verify and ship the offline Kubernetes bundle (see docs/bundle.md).",
    )
    sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="{pack,verify,disk}")

    pack = sub.add_parser("pack", help="assemble a bundle directory from release binaries and image tarballs")
    pack.add_argument("--kubernetes-version", required=True, metavar="V", help="e.g. 1.20.2 or v1.20.2")
    pack.add_argument("--runtime", required=True, choices=RUNTIMES)
    pack.add_argument("--bin", required=True, type=Path, metavar="DIR",
                      help="kubeadm, kubelet, kubectl [etcdctl, crictl]")
    pack.add_argument("--images", required=True, type=Path, metavar="DIR",
                      help="docker-archive *.tar files (docker save / skopeo copy ... docker-archive:)")
    pack.add_argument("--cni", required=True, type=Path, metavar="DIR", help="CNI plugin binaries")
    pack.add_argument("--extras", type=Path, metavar="DIR", help="more files, copied under extras/")
    pack.add_argument("--out", required=True, type=Path, metavar="BUNDLE_DIR")
    pack.add_argument("--replace", action="store_true", help="replace an existing BUNDLE_DIR")
    pack.set_defaults(func=_pack)

    verify = sub.add_parser("verify", help="check every checksum and the required files")
    verify.add_argument("bundle_dir", type=Path, metavar="BUNDLE_DIR")
    verify.set_defaults(func=_verify)

    disk = sub.add_parser("disk", help="raw ext4 disk image labelled imagegen-bundle (no mount needed)")
    disk.add_argument("bundle_dir", type=Path, metavar="BUNDLE_DIR")
    disk.add_argument("out", type=Path, metavar="OUT.img")
    disk.set_defaults(func=_disk)


def _fail(exc: BundleError) -> int:
    if len(exc.problems) == 1:
        print(f"imagegen: {exc.problems[0]}", file=sys.stderr)
    else:
        print(f"imagegen: bundle: {len(exc.problems)} problems", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _pack(args: argparse.Namespace) -> int:
    spec = PackSpec(
        kubernetes_version=args.kubernetes_version,
        runtime=args.runtime,
        bin_dir=args.bin,
        images_dir=args.images,
        cni_dir=args.cni,
        extras_dir=args.extras,
        out=args.out,
        replace=args.replace,
    )
    try:
        manifest = pack_bundle(spec)
    except BundleError as exc:
        return _fail(exc)
    print(f"packed {args.out}: Kubernetes {manifest.kubernetes_version}, runtime {manifest.runtime}, "
          f"{len(manifest.images)} image archives, {len(manifest.cni_plugins)} CNI plugins, "
          f"{len(manifest.files)} files")
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        manifest = verify_bundle(args.bundle_dir)
    except BundleError as exc:
        return _fail(exc)
    print(f"ok {args.bundle_dir}: Kubernetes {manifest.kubernetes_version}, {len(manifest.files)} files verified")
    for tag in manifest.tags:
        print(f"  image {tag}")
    for absent in manifest.absent_images:
        print(f"  absent {absent.tag}: {absent.reason}")
    return 0


def _disk(args: argparse.Namespace) -> int:
    try:
        disk = make_disk(args.bundle_dir, args.out)
    except BundleError as exc:
        return _fail(exc)
    print(f"wrote {disk.path}: {disk.size_bytes // (1 << 20)} MiB ext4, label {disk.label}, UUID {disk.uuid}")
    return 0
