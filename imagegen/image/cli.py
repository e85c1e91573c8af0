"""`imagegen image build` and `imagegen image boot-check`: argument parsing and printing only."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from imagegen.errors import UsageError
from imagegen.image.build import build_image, default_cache, load_spec
from imagegen.image.proc import BuildError
from imagegen.image.spec import parse_formats


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    image = subparsers.add_parser("image", help="build bootable node images from Debian packages")
    sub = image.add_subparsers(dest="image_command", required=True)

    build = sub.add_parser("build", help="build (or reuse from the cache) a node image")
    _common(build)
    build.add_argument("--formats", help="comma list of qcow2,qcow2c,raw,vmdk,ova (default: the spec's)")
    build.add_argument("--force", action="store_true", help="rebuild even when the cache has this image")
    build.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    build.set_defaults(func=run_build)

    check = sub.add_parser("boot-check", help="boot the built image once under SeaBIOS or OVMF with a trivial "
                                              "NoCloud seed and wait for cloud-init's final message")
    _common(check)
    check.add_argument("--firmware", choices=("bios", "uefi"), default="bios")
    check.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    check.add_argument("--bus", choices=("virtio", "sata"), default="virtio",
                       help="virtio, or sata: AHCI disk/cdrom + e1000 NIC, as on VMware (needs --kernel generic)")
    check.set_defaults(func=run_boot_check)

    _add_netboot(sub)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", default="node", help="image spec name (profiles/images/NAME.yaml) or file")
    p.add_argument("--kernel", choices=("cloud", "generic"),
                   help="cloud (small, virtio only) or generic (AHCI, e1000, LSI: VMware); default: the spec's")
    p.add_argument("--bundle", type=Path, help="Kubernetes bundle directory to bake in at /opt/imagegen/bundle "
                                               "(its images are imported into the image's containerd)")
    p.add_argument("--cache", type=Path, help=f"cache directory (default {default_cache()})")


def run_build(args: argparse.Namespace) -> int:
    try:
        formats = parse_formats(args.formats) if args.formats else None
        spec = load_spec(args.spec, kernel=args.kernel, bundle=args.bundle, formats=formats)
        built = build_image(spec, cache=args.cache, force=args.force)
    except UsageError as exc:
        print(f"imagegen: image build: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"imagegen: image build: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imagegen: image build: interrupted; nothing was left in the cache", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"key": built.key, "directory": str(built.directory), "cached": built.cached,
                          "seconds": round(built.seconds, 1),
                          "files": {f.value: str(p) for f, p in built.files.items()}}, indent=2))
    else:
        state = "cached" if built.cached else "built"
        print(f"{state} {built.directory.name} in {built.seconds:.1f} s (log: {built.log})", file=sys.stderr)
        for fmt, path in built.files.items():
            print(f"{fmt.value}\t{path}")
    return 0


def run_boot_check(args: argparse.Namespace) -> int:
    from imagegen.image import qemu
    from imagegen.image.seed import write_trivial_seed

    try:
        spec = load_spec(args.spec, kernel=args.kernel, bundle=args.bundle)
        built = build_image(spec, cache=args.cache)
        accel = qemu.probe_accel()
    except UsageError as exc:
        print(f"imagegen: image boot-check: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"imagegen: image boot-check: {exc}", file=sys.stderr)
        return 1
    marker = f"IMAGEGEN-BOOT-CHECK-DONE firmware={args.firmware} bus={args.bus}"
    with tempfile.TemporaryDirectory(prefix="imagegen-boot-check-") as tmp:
        seed = Path(tmp, "seed.iso")
        write_trivial_seed(seed, hostname="boot-check", final_message=marker)
        serial = built.directory / f"boot-check-{args.firmware}-{args.bus}.console.log"
        serial.unlink(missing_ok=True)
        print(f"booting {built.qcow2.name} under {args.firmware} ({accel}); console: {serial}", file=sys.stderr)
        try:
            seconds = qemu.boot_until(built.qcow2, firmware=args.firmware, seed_iso=seed, marker=marker,
                                      serial_log=serial, accel=accel, timeout=args.timeout, bus=args.bus)
        except qemu.BootTimeout as exc:
            print(f"imagegen: image boot-check: {exc}; console: {serial}", file=sys.stderr)
            return 1
    print(f"boot-check {built.directory.name} {args.firmware}/{args.bus}: cloud-init final message after "
          f"{seconds:.1f} s")
    return 0


# --- `imagegen image netboot` (imagegen.image.netboot) ----------------------------------------------------------
def _add_netboot(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    netboot = sub.add_parser("netboot", help="what boots over the network: the image's kernel and initrd, the "
                                             "installer initrd and the disk image it writes",
                             description="Writes vmlinuz, initrd.img, installer.cpio.gz, node.raw.gz and "
                                         "netboot.json for `imagegen serve --boot-dir` (builds the image first "
                                         "when the cache lacks it).")
    _common(netboot)
    netboot.add_argument("--out", type=Path, help="directory to write (default: netboot/ beside the cached image)")
    netboot.add_argument("--force", action="store_true", help="remake the artefacts even when they are current")
    netboot.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    netboot.set_defaults(func=run_netboot)


def run_netboot(args: argparse.Namespace) -> int:
    from imagegen.image.netboot import build_netboot

    try:
        built = build_image(load_spec(args.spec, kernel=args.kernel, bundle=args.bundle), cache=args.cache)
        made = build_netboot(built, args.out, force=args.force)
    except UsageError as exc:
        print(f"imagegen: image netboot: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"imagegen: image netboot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imagegen: image netboot: interrupted; nothing was left behind", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"directory": str(made.directory), "cached": made.cached, "seconds": round(made.seconds, 1),
                          "files": {n: str(p) for n, p in made.files.items()}}, indent=2))
    else:
        print(f"{'current' if made.cached else 'made'} {made.directory} in {made.seconds:.1f} s "
              f"(serve it: imagegen serve OUT --boot-dir {made.directory})", file=sys.stderr)
        for name, path in made.files.items():
            print(f"{name}\t{path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagegen")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
