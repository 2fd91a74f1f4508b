# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A lab CA and the TLS certificates NATS needs (servers, routes, clients), with the
``cryptography`` package: EC P-256 keys, SHA-256 signatures.

Pure functions: PEM bytes in, PEM bytes out. What must be (re)generated, and why, is
decided here (decide_ca, decide_leaf); library/tapio_tls_certificates.py only reads and
writes the files.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

USAGES: dict[str, frozenset[x509.ObjectIdentifier]] = {
    "server": frozenset({ExtendedKeyUsageOID.SERVER_AUTH}),
    "client": frozenset({ExtendedKeyUsageOID.CLIENT_AUTH}),
    "both": frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
}
# Certificates start a little in the past, so a peer whose clock lags still accepts them.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


@dataclass(frozen=True)
class LeafRequest:
    """What a leaf certificate must say: its common name, SANs and usage."""

    common_name: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    usage: str = "both"

    def __post_init__(self) -> None:
        """Refuse a bad request when it is made, not when a certificate is built from it."""
        if self.usage not in USAGES:
            raise ValueError(f"usage must be one of {sorted(USAGES)}, got {self.usage!r}")
        for address in self.ip_addresses:
            ipaddress.ip_address(address)  # its ValueError names the bad address

    @property
    def ips(self) -> list[IPAddress]:
        return sorted({ipaddress.ip_address(ip) for ip in self.ip_addresses}, key=str)


@dataclass(frozen=True)
class Decision:
    """``reason`` is why the pair must be (re)generated, None to keep ``existing``."""

    reason: Optional[str]
    existing: Optional[KeyPair] = None

    @property
    def regenerate(self) -> bool:
        return self.reason is not None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_ca(common_name: str, valid_days: int, now: Optional[datetime] = None) -> KeyPair:
    """A self-signed CA that may only sign certificates and CRLs."""
    now = now or utcnow()
    key = _new_key()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert, key)


def _authority_key_identifier(ca: KeyPair) -> x509.AuthorityKeyIdentifier:
    """The CA's own key identifier when it has one (a CA made elsewhere may compute it differently)."""
    identifier = _extension(ca.cert, x509.SubjectKeyIdentifier)
    if identifier is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier.value)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())


def issue_leaf(ca: KeyPair, request: LeafRequest, valid_days: int, now: Optional[datetime] = None) -> KeyPair:
    """A new key and a certificate for it signed by ``ca``; it never outlives the CA."""
    now = now or utcnow()
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in request.dns_names]
    sans += [x509.IPAddress(ip) for ip in request.ips]
    builder = (x509.CertificateBuilder()
               .subject_name(_name(request.common_name))
               .issuer_name(ca.cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - CLOCK_SKEW)
               .not_valid_after(min(now + timedelta(days=valid_days), ca.cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               # ECDSA keys only sign (the TLS handshake); nothing is encrypted with them.
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(sorted(USAGES[request.usage], key=lambda oid: oid.dotted_string)),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(_authority_key_identifier(ca), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8: nats-server and nats-py read it without a passphrase."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_der(key: Union[CertificateIssuerPrivateKeyTypes, x509.Certificate]) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_pair(cert_data: Optional[bytes], key_data: Optional[bytes]) -> Decision:
    """The parsed pair, or why it cannot be used: missing, unreadable or not matching."""
    if cert_data is None:
        return Decision("the certificate is missing")
    if key_data is None:
        return Decision("the key is missing")
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        return Decision("the certificate is not a readable PEM certificate")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return Decision("the key is not a readable unencrypted PEM private key")
    if not isinstance(key, CertificateIssuerPrivateKeyTypes) or _public_der(key) != _public_der(cert):
        return Decision("the key does not match the certificate")
    return Decision(None, KeyPair(cert, key))


def _expiry_reason(cert: x509.Certificate, renew_before_days: int, now: datetime) -> Optional[str]:
    expires = cert.not_valid_after_utc
    if expires - now < timedelta(days=renew_before_days):
        return f"it expires {expires:%Y-%m-%d %H:%M} UTC, within {renew_before_days} days"
    return None


def _common_name(cert: x509.Certificate) -> Optional[str]:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _extension(cert: x509.Certificate, kind: type) -> Optional[x509.Extension]:
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def decide_ca(cert_data: Optional[bytes], key_data: Optional[bytes], common_name: str, renew_before_days: int,
              now: Optional[datetime] = None) -> Decision:
    """Whether the CA in these PEM files (None: no file) must be generated again, and why."""
    loaded = load_pair(cert_data, key_data)
    if loaded.existing is None:
        return loaded
    cert = loaded.existing.cert
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or not constraints.value.ca:
        return Decision("the certificate is not a CA")
    if _common_name(cert) != common_name:
        return Decision(f"its common name is {_common_name(cert)!r}, asked {common_name!r}")
    return Decision(_expiry_reason(cert, renew_before_days, now or utcnow()), loaded.existing)


def _missing_sans(cert: x509.Certificate, request: LeafRequest) -> list[str]:
    extension = _extension(cert, x509.SubjectAlternativeName)
    dns = {name.lower() for name in extension.value.get_values_for_type(x509.DNSName)} if extension else set()
    ips = set(extension.value.get_values_for_type(x509.IPAddress)) if extension else set()
    missing = [f"DNS:{name}" for name in request.dns_names if name.lower() not in dns]
    return missing + [f"IP:{ip}" for ip in request.ips if ip not in ips]


def _usage_of(cert: x509.Certificate) -> str:
    extension = _extension(cert, x509.ExtendedKeyUsage)
    found = frozenset(extension.value) if extension else frozenset()
    return next((usage for usage, oids in USAGES.items() if oids == found), "other")


def decide_leaf(cert_data: Optional[bytes], key_data: Optional[bytes], ca: x509.Certificate, request: LeafRequest,
                renew_before_days: int, ca_is_new: bool = False, now: Optional[datetime] = None) -> Decision:
    """Whether the leaf in these PEM files (None: no file) must be issued again by ``ca``, and why.

    ``ca_is_new``: the CA was just generated, so every leaf it did not sign is reissued.
    A leaf with more SANs than asked is kept: it still covers what is asked.
    """
    loaded = load_pair(cert_data, key_data)
    if loaded.existing is None:
        return loaded
    cert = loaded.existing.cert
    if ca_is_new:
        return Decision("the CA is new")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return Decision("it was not issued by this CA")
    if _common_name(cert) != request.common_name:
        return Decision(f"its common name is {_common_name(cert)!r}, asked {request.common_name!r}")
    missing = _missing_sans(cert, request)
    if missing:
        return Decision("its SANs do not cover " + ", ".join(missing))
    if _usage_of(cert) != request.usage:
        return Decision(f"its usage is {_usage_of(cert)}, asked {request.usage}")
    return Decision(_expiry_reason(cert, renew_before_days, now or utcnow()), loaded.existing)
