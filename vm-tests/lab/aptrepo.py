"""Signed apt repositories from a directory of .deb files: the `Packages` index (control fields from `dpkg-deb
-f`, plus Filename, Size and hashes, as dpkg-scanpackages writes them), a `Release` with the index hashes, and
`InRelease` / `Release.gpg` signed with a throwaway key kept in the lab cache. Two layouts:

- flat (pkgs.k8s.io's `core:/stable:/v1.20/deb/`): Packages, Release, InRelease, Release.gpg and Release.key at the
  repository root, the packages under `amd64/`; sources.list `deb [signed-by=K] URL /`;
- dists (a Debian mirror): `dists/<suite>/{Release,InRelease,Release.gpg}`, `dists/<suite>/main/binary-amd64/
  Packages{,.gz}`, the packages under `pool/main/`; sources.list `deb [signed-by=K] URL <suite> main`.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY_UID = "imagegen lab repository (throwaway, vm-tests only) <lab@imagegen.invalid>"


@dataclass(frozen=True)
class SigningKey:
    home: Path           # GNUPGHOME holding the secret key
    fingerprint: str
    armored: Path        # public key, ASCII armour (what Release.key is)
    keyring: Path        # public key, binary (what `gpg --dearmor` makes; apt's signed-by)


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = {**os.environ, "GNUPGHOME": str(home)}
    done = subprocess.run(["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "", *args],
                          input=stdin, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def stop_agent(home: Path) -> None:
    """gpg leaves an agent behind per home directory; end ours (only ours: gpgconf addresses it by its home)."""
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(home)},
                   capture_output=True, check=False)


def signing_key(cache: Path) -> SigningKey:
    """The lab's key, generated once into `cache/gnupg` (ed25519, no passphrase, never expires)."""
    home = cache / "gnupg"
    armored, keyring = cache / "lab-repo.asc", cache / "lab-repo.gpg"
    if not (home / "fingerprint").is_file():
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        try:
            _gpg(home, "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
            listing = _gpg(home, "--with-colons", "--list-secret-keys").decode()
        finally:
            stop_agent(home)
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        (home / "fingerprint").write_text(fpr + "\n")
    fpr = (home / "fingerprint").read_text().strip()
    if not armored.is_file() or not keyring.is_file():
        armored.write_bytes(_gpg(home, "--armor", "--export", fpr))
        keyring.write_bytes(_gpg(home, "--export", fpr))
    return SigningKey(home, fpr, armored, keyring)


def _hashes(data: bytes) -> dict[str, str]:
    return {"MD5sum": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest(),
            "SHA256": hashlib.sha256(data).hexdigest()}


def control_stanza(deb: Path, filename: str) -> str:
    """One Packages stanza: the package's control fields, then Filename, Size and hashes."""
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    data = deb.read_bytes()
    lines = [line for line in control.rstrip("\n").split("\n") if line]
    extra = [f"Filename: {filename}", f"Size: {len(data)}"] + [f"{k}: {v}" for k, v in _hashes(data).items()]
    # dpkg-scanpackages puts them after the fields a reader looks for first; apt reads any order.
    return "\n".join(lines + extra) + "\n"


def packages_index(root: Path, debs: list[Path]) -> bytes:
    """Packages for `debs` (paths below `root`), sorted by package name and version for a stable file."""
    stanzas = sorted((deb.name, control_stanza(deb, deb.relative_to(root).as_posix())) for deb in debs)
    return "\n".join(s for _, s in stanzas).encode()


def release_text(index_dir: Path, files: list[Path], fields: dict[str, str]) -> str:
    """Release: `fields`, Date, and MD5Sum/SHA256 lines for `files` (relative to `index_dir`)."""
    out = [f"{k}: {v}" for k, v in fields.items()]
    out.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    for title, algo in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        out.append(f"{title}:")
        for f in files:
            data = f.read_bytes()
            out.append(f" {hashlib.new(algo, data).hexdigest()} {len(data):>10} {f.relative_to(index_dir).as_posix()}")
    return "\n".join(out) + "\n"


def sign_release(release: Path, key: SigningKey) -> None:
    """InRelease (clear-signed) and Release.gpg (detached) beside `release`."""
    try:
        for args, name in ((["--clearsign"], "InRelease"), (["--armor", "--detach-sign"], "Release.gpg")):
            signed = _gpg(key.home, "--local-user", key.fingerprint, "--digest-algo", "SHA256", *args, "--output",
                          "-", str(release))
            (release.parent / name).write_bytes(signed)
    finally:
        stop_agent(key.home)


def _write_index(index: Path, data: bytes) -> list[Path]:
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(data)
    gz = index.with_name(index.name + ".gz")
    gz.write_bytes(gzip.compress(data, mtime=0))
    return [index, gz]


def publish_flat(root: Path, key: SigningKey, *, origin: str, label: str) -> None:
    """Index, sign and publish the packages under `root/amd64/` as a flat repository."""
    debs = sorted((root / "amd64").glob("*.deb"))
    files = _write_index(root / "Packages", packages_index(root, debs))
    release = root / "Release"
    release.write_text(release_text(root, files, {"Origin": origin, "Label": label, "Architectures": "amd64"}))
    sign_release(release, key)
    (root / "Release.key").write_bytes(key.armored.read_bytes())


def publish_dists(root: Path, suite: str, key: SigningKey, *, origin: str, label: str) -> None:
    """Index, sign and publish the packages under `root/pool/main/` as `suite`'s main component."""
    debs = sorted((root / "pool" / "main").glob("*.deb"))
    dist = root / "dists" / suite
    files = _write_index(dist / "main" / "binary-amd64" / "Packages", packages_index(root, debs))
    release = dist / "Release"
    release.write_text(release_text(dist, files, {
        "Origin": origin, "Label": label, "Suite": suite, "Codename": suite, "Architectures": "amd64",
        "Components": "main", "Description": "what the imagegen profiles install, for the lab's offline nodes"}))
    sign_release(release, key)
    (root / "key.asc").write_bytes(key.armored.read_bytes())
