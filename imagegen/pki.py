"""Cluster PKI and join material, made ahead of boot with `cryptography`.

Certificates follow what kubeadm itself would create (RSA 2048, ten-year CAs), so `kubeadm init` finds them in
/etc/kubernetes/pki and uses them ("Using existing ca certificate authority"), and the discovery hash computed
here equals the one kubeadm prints.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import secrets
import string
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class KeyPair:
    """A certificate (PEM) and its private key (PEM, PKCS#1 like kubeadm writes)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(ca: bool) -> x509.KeyUsage:
    """What kubeadm sets: signing and key encipherment, plus certificate signing for a CA."""
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def new_ca(common_name: str, now: dt.datetime | None = None) -> KeyPair:
    now = now or dt.datetime.now(dt.UTC)
    key = new_key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_leaf(ca: KeyPair, common_name: str, *, org: str | None = None, client: bool = False,
             server: bool = False, dns_names: tuple[str, ...] = (), ips: tuple[str, ...] = (),
             now: dt.datetime | None = None) -> KeyPair:
    now = now or dt.datetime.now(dt.UTC)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = new_key()
    usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + ([ExtendedKeyUsageOID.SERVER_AUTH] if server
                                                                        else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, org))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_service_account_keys() -> tuple[bytes, bytes]:
    """(sa.key, sa.pub) as kubeadm names them."""
    key = new_key()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return _key_pem(key), pub


def new_bootstrap_token() -> str:
    """A token in kubeadm's format: [a-z0-9]{6}.[a-z0-9]{16}."""
    token_id = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(6))
    secret = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16))
    return f"{token_id}.{secret}"


def new_certificate_key() -> str:
    """kubeadm's --certificate-key: 32 random bytes, hex (an AES-256 key)."""
    return secrets.token_hex(32)


def discovery_hash(ca_cert_pem: bytes) -> str:
    """`sha256:` + hex of the CA's SubjectPublicKeyInfo DER: what kubeadm prints for caCertHashes."""
    cert = x509.load_pem_x509_certificate(ca_cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def new_password(length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    # Harbor requires upper, lower and digit in its admin password.
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if any(c.isupper() for c in value) and any(c.islower() for c in value) and any(c.isdigit() for c in value):
            return value


# Verification of a state read back from disk: a tampered or corrupt file must never reach a node.

class PairError(ValueError):
    """A certificate/key pair failed verification; `part` is "cert" or "key", the file to blame."""

    def __init__(self, part: str, reason: str) -> None:
        self.part = part
        self.reason = reason
        super().__init__(reason)


def _public_der(key: object) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


@functools.lru_cache(maxsize=32)
def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """An unencrypted RSA private key in PEM, or ValueError saying why not. Cached: checking an RSA key's
    consistency takes tens of milliseconds and a render verifies its state twice (before and under the lock)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:
        raise ValueError("is encrypted; imagegen needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError("is not a PEM private key (corrupt or truncated)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"is a {type(key).__name__.lstrip('_')}, not an RSA private key")
    return key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_pair(pair: KeyPair, *, ca: bool, issuer: KeyPair | None = None, now: dt.datetime | None = None) -> None:
    """Check a pair as imagegen made it: both parse, the key belongs to the certificate, a CA is a self-signed
    CA, a leaf is no CA and is signed by `issuer`, and the certificate is valid now. Raise PairError."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        cert = x509.load_pem_x509_certificate(pair.cert_pem)
    except ValueError as exc:
        raise PairError("cert", "is not a PEM certificate (corrupt or truncated)") from exc
    try:
        key = load_private_key(pair.key_pem)
    except ValueError as exc:
        raise PairError("key", str(exc)) from exc
    try:
        cert_public = _public_der(cert.public_key())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PairError("cert", "holds a public key imagegen cannot read") from exc
    if _public_der(key.public_key()) != cert_public:
        raise PairError("key", "does not belong to the certificate beside it")
    try:
        is_ca = _is_ca(cert)
    except ValueError as exc:
        raise PairError("cert", "has extensions that cannot be parsed (corrupt)") from exc
    if ca != is_ca:
        raise PairError("cert", "is not a CA certificate" if ca else "is a CA certificate, expected a leaf")
    signer = cert if ca else (issuer.cert if issuer is not None else None)
    if signer is not None:
        try:
            cert.verify_directly_issued_by(signer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PairError("cert", "is not self-signed" if ca else "is not signed by its CA") from exc
    if now > cert.not_valid_after_utc:
        raise PairError("cert", f"expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if now < cert.not_valid_before_utc - dt.timedelta(days=1):
        raise PairError("cert", f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d} (check the clock)")


def verify_service_account_keys(key_pem: bytes, pub_pem: bytes) -> None:
    """sa.key must parse and sa.pub must be its public half. Raise PairError ("key" or "pub")."""
    try:
        key = load_private_key(key_pem)
    except ValueError as exc:
        raise PairError("key", str(exc)) from exc
    try:
        pub = serialization.load_pem_public_key(pub_pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PairError("pub", "is not a PEM public key (corrupt or truncated)") from exc
    if _public_der(pub) != _public_der(key.public_key()):
        raise PairError("pub", "is not the public half of sa.key")
