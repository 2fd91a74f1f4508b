"""Unit tests for the lab CA and NATS certificates: module_utils/tapio_tls.py (what is built
and when it must be built again) and library/tapio_tls_certificates.py, run the way the
project's action plugin runs modules (``main()`` in this process). A real nats-server using
these files: tests/integration/test_tls_certificates.py."""
from __future__ import annotations

import json
import os
from datetime import timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from module_utils_loader import load_file as load
from module_utils_loader import load_module_utils

tls = load_module_utils("tapio_tls")
REPO_ROOT = Path(__file__).resolve().parents[2]




action = load("tapio_test_action_plugin", REPO_ROOT / "plugins" / "action" / "tapio_migration.py")
certificates_module = load("tapio_test_library_tls", REPO_ROOT / "library" / "tapio_tls_certificates.py")

SERVER = tls.LeafRequest("nats", ("localhost", "nats.tapio.svc"), ("127.0.0.1",), "server")


@pytest.fixture(scope="module")
def ca() -> Any:
    return tls.generate_ca("test-ca", 365)


@pytest.fixture(scope="module")
def server(ca: Any) -> Any:
    return tls.issue_leaf(ca, SERVER, 365)


def pems(pair: Any) -> tuple[bytes, bytes]:
    return tls.cert_pem(pair.cert), tls.key_pem(pair.key)


# --- what is built -------------------------------------------------------------------------

def test_the_ca_is_a_self_signed_p256_ca_that_only_signs_certificates(ca: Any) -> None:
    cert = ca.cert
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and ca.key.curve.name == "secp256r1"
    assert cert.subject == cert.issuer and cert.subject.rfc4514_string() == "CN=test-ca"
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    identifier = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert identifier == x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=365)


def test_a_leaf_chains_to_its_ca_with_the_sans_and_usage_asked(ca: Any, server: Any) -> None:
    cert = server.cert
    cert.verify_directly_issued_by(ca.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "nats.tapio.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ip_address("127.0.0.1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    authority = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert authority.key_identifier == ca.cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest


@pytest.mark.parametrize("usage, expected", [
    ("client", {ExtendedKeyUsageOID.CLIENT_AUTH}),
    ("both", {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
])
def test_usage_sets_the_extended_key_usage(ca: Any, usage: str, expected: set[Any]) -> None:
    cert = tls.issue_leaf(ca, tls.LeafRequest("c", usage=usage), 30).cert
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == expected


def test_a_leaf_never_outlives_its_ca(ca: Any) -> None:
    assert tls.issue_leaf(ca, SERVER, 10 * 365).cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_keys_are_unencrypted_pkcs8(ca: Any) -> None:
    assert tls.key_pem(ca.key).startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("request_args", [{"ip_addresses": ("10.0.0.300",)}, {"usage": "route"}])
def test_a_bad_request_is_refused_when_made(request_args: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        tls.LeafRequest("x", **request_args)


# --- when it must be built again -----------------------------------------------------------

def test_no_files_means_generate() -> None:
    assert tls.decide_ca(None, None, "test-ca", 30).reason == "the certificate is missing"


def test_an_unchanged_ca_and_leaf_are_kept(ca: Any, server: Any) -> None:
    ca_decision = tls.decide_ca(*pems(ca), "test-ca", 30)
    assert not ca_decision.regenerate and ca_decision.existing.cert == ca.cert
    assert not tls.decide_leaf(*pems(server), ca.cert, SERVER, 30).regenerate


def test_more_sans_than_asked_still_cover_the_request(ca: Any, server: Any) -> None:
    fewer = tls.LeafRequest("nats", ("LOCALHOST",), (), "server")
    assert not tls.decide_leaf(*pems(server), ca.cert, fewer, 30).regenerate


@pytest.mark.parametrize("changed, reason", [
    ({"dns_names": ("localhost", "nats.tapio.svc", "nats-2.nats")}, "its SANs do not cover DNS:nats-2.nats"),
    ({"ip_addresses": ("127.0.0.1", "::1")}, "its SANs do not cover IP:::1"),
    ({"usage": "both"}, "its usage is server, asked both"),
    ({"common_name": "nats-2"}, "its common name is 'nats', asked 'nats-2'"),
])
def test_a_leaf_that_no_longer_says_what_is_asked_is_reissued(ca: Any, server: Any, changed: dict[str, Any],
                                                               reason: str) -> None:
    request = tls.LeafRequest(**{**SERVER.__dict__, **changed})
    assert tls.decide_leaf(*pems(server), ca.cert, request, 30).reason == reason


def test_expiring_within_the_renewal_window_is_renewed(ca: Any, server: Any) -> None:
    assert not tls.decide_leaf(*pems(server), ca.cert, SERVER, 30).regenerate
    reason = tls.decide_leaf(*pems(server), ca.cert, SERVER, 30, now=tls.utcnow() + timedelta(days=340)).reason
    assert reason is not None and reason.startswith("it expires ") and "within 30 days" in reason
    assert "within 366 days" in str(tls.decide_ca(*pems(ca), "test-ca", 366).reason)


def test_a_key_that_does_not_match_is_replaced(ca: Any, server: Any) -> None:
    other_key = tls.key_pem(tls.generate_ca("other", 1).key)
    assert tls.decide_leaf(tls.cert_pem(server.cert), other_key, ca.cert, SERVER, 30).reason == \
        "the key does not match the certificate"
    assert tls.decide_ca(tls.cert_pem(ca.cert), other_key, "test-ca", 30).reason == \
        "the key does not match the certificate"


def test_unreadable_files_are_replaced(ca: Any, server: Any) -> None:
    assert "not a readable PEM certificate" in str(tls.decide_leaf(b"junk", pems(server)[1], ca.cert, SERVER,
                                                                   30).reason)
    assert "not a readable" in str(tls.decide_ca(tls.cert_pem(ca.cert), b"junk", "test-ca", 30).reason)
    assert tls.decide_leaf(tls.cert_pem(server.cert), None, ca.cert, SERVER, 30).reason == "the key is missing"


def test_a_leaf_from_another_ca_is_reissued(server: Any) -> None:
    other = tls.generate_ca("test-ca", 365)  # same name, other key: only the signature tells them apart
    assert tls.decide_leaf(*pems(server), other.cert, SERVER, 30).reason == "it was not issued by this CA"


def test_a_new_ca_reissues_even_a_leaf_it_could_verify(ca: Any, server: Any) -> None:
    assert tls.decide_leaf(*pems(server), ca.cert, SERVER, 30, ca_is_new=True).reason == "the CA is new"


def test_a_leaf_is_not_taken_for_a_ca_and_a_renamed_ca_is_regenerated(ca: Any, server: Any) -> None:
    assert tls.decide_ca(*pems(server), "nats", 30).reason == "the certificate is not a CA"
    assert tls.decide_ca(*pems(ca), "tapio-lab-ca", 30).reason == "its common name is 'test-ca', asked 'tapio-lab-ca'"


# --- the module ----------------------------------------------------------------------------

CERTIFICATES = [
    {"name": "nats-server", "common_name": "nats", "dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"],
     "usage": "server"},
    {"name": "tapio-client", "common_name": "tapio", "usage": "client"},
]


def run(args: dict[str, Any], check: bool = False, diff: bool = True) -> dict[str, Any]:
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff,
                                       "_ansible_verbosity": 0}}
    return json.loads(action.run_module_in_process(certificates_module, json.dumps(payload).encode()))


def files_of(dest: Path) -> dict[str, tuple[bytes, str]]:
    return {path.name: (path.read_bytes(), oct(path.stat().st_mode & 0o777)) for path in sorted(dest.iterdir())}


def test_the_module_writes_a_ca_and_certificates_then_keeps_them(tmp_path: Path) -> None:
    dest = tmp_path / "tls"
    first = run({"dest": str(dest), "certificates": CERTIFICATES})
    assert first["changed"] is True and not first.get("failed"), first
    assert oct(dest.stat().st_mode & 0o777) == "0o700"
    files = files_of(dest)
    assert {name: mode for name, (_, mode) in files.items()} == {
        "ca.crt": "0o644", "ca.key": "0o600", "nats-server.crt": "0o644", "nats-server.key": "0o600",
        "tapio-client.crt": "0o644", "tapio-client.key": "0o600"}
    assert first["ca_cert"] == str(dest / "ca.crt")
    assert first["certificates"]["tapio-client"] == {"cert": str(dest / "tapio-client.crt"),
                                                     "key": str(dest / "tapio-client.key")}
    assert {item["file"] for item in first["renewed"]} == {str(dest / name) for name in files}
    ca = x509.load_pem_x509_certificate(files["ca.crt"][0])
    x509.load_pem_x509_certificate(files["nats-server.crt"][0]).verify_directly_issued_by(ca)
    assert "PRIVATE KEY" not in json.dumps(first)

    again = run({"dest": str(dest), "certificates": CERTIFICATES})
    assert again["changed"] is False and again["renewed"] == [] and "diff" not in again
    assert files_of(dest) == files


def test_an_added_san_reissues_only_that_certificate_and_diff_says_why(tmp_path: Path) -> None:
    run({"dest": str(tmp_path), "certificates": CERTIFICATES})
    before = files_of(tmp_path)
    wider = [{**CERTIFICATES[0], "dns_names": ["localhost", "nats-0.nats"]}, CERTIFICATES[1]]
    result = run({"dest": str(tmp_path), "certificates": wider})
    assert result["changed"] is True
    assert result["renewed"] == [
        {"file": str(tmp_path / "nats-server.key"), "reason": "its SANs do not cover DNS:nats-0.nats"},
        {"file": str(tmp_path / "nats-server.crt"), "reason": "its SANs do not cover DNS:nats-0.nats"}]
    after = files_of(tmp_path)
    assert {name for name in after if after[name] != before[name]} == {"nats-server.crt", "nats-server.key"}
    assert result["diff"]["before"] == "nats-server.key: present\nnats-server.crt: present\n"
    assert "nats-server.crt: renewed (its SANs do not cover DNS:nats-0.nats)" in result["diff"]["after"]


def test_a_new_ca_reissues_every_certificate(tmp_path: Path) -> None:
    run({"dest": str(tmp_path), "certificates": CERTIFICATES})
    (tmp_path / "ca.key").unlink()
    result = run({"dest": str(tmp_path), "certificates": CERTIFICATES})
    reasons = {Path(item["file"]).name: item["reason"] for item in result["renewed"]}
    assert reasons["ca.crt"] == "the key is missing"
    assert reasons["nats-server.crt"] == reasons["tapio-client.key"] == "the CA is new"
    assert len(reasons) == 6


def test_check_mode_writes_nothing_but_says_what_would_change(tmp_path: Path) -> None:
    dest = tmp_path / "tls"
    result = run({"dest": str(dest), "certificates": CERTIFICATES}, check=True)
    assert result["changed"] is True and not dest.exists()
    assert "ca.crt: created (the certificate is missing)" in result["diff"]["after"]
    assert "BEGIN" not in json.dumps(result)


def test_a_loosened_key_mode_is_set_back(tmp_path: Path) -> None:
    run({"dest": str(tmp_path), "certificates": CERTIFICATES})
    os.chmod(tmp_path / "tapio-client.key", 0o644)
    result = run({"dest": str(tmp_path), "certificates": CERTIFICATES})
    assert result["changed"] is True
    assert result["renewed"] == [{"file": str(tmp_path / "tapio-client.key"),
                                  "reason": "its mode was 0644, set to 0600"}]
    assert oct((tmp_path / "tapio-client.key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("change, problem", [
    ({"certificates": [{"name": "", "common_name": "x"}]}, "must be a file stem without '/'"),
    ({"certificates": [{"name": "a/b", "common_name": "x"}]}, "must be a file stem without '/'"),
    ({"certificates": [{"name": "ca", "common_name": "x"}]}, "'ca' is the CA's own files"),
    ({"certificates": [{"name": "a", "common_name": "x", "ip_addresses": ["1.2.3"]}]}, "'1.2.3' is not an IP address"),
    ({"certificates": [{"name": "a", "common_name": "x"}, {"name": "a", "common_name": "y"}]}, "'a' is used twice"),
    ({"renew_before_days": 365}, "less than valid_days"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    dest = tmp_path / "tls"
    result = run({"dest": str(dest), **change})
    assert result.get("failed") and problem in result["msg"] and "Nothing was written" in result["msg"], result
    assert not dest.exists()
