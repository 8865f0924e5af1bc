"""Certificates made on the spot for TLS tests and benchmarks (docs/security.md):
a CA, a broker certificate for 127.0.0.1/localhost, client certificates with any
subject. EC P-256 keys, valid for two days, written as PEM files."""
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(**attrs):
    oids = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "O": NameOID.ORGANIZATION_NAME,
            "C": NameOID.COUNTRY_NAME}
    # Given most significant first, as a certificate encodes them.
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def _cert(subject, key, issuer, issuer_key, ca=False, san=None, client=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    else:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, cert=None, key=None):
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return str(path)


class Pki:
    """A CA, a broker certificate for 127.0.0.1/localhost, and client certificates."""

    def __init__(self, d):
        d.mkdir(exist_ok=True)
        self.d = d
        self.ca_key = _key()
        self.ca_name = _name(CN="kafscale-test-ca")
        self.ca_cert = _cert(self.ca_name, self.ca_key, self.ca_name, self.ca_key, ca=True)
        self.ca = _write(d / "ca.pem", cert=self.ca_cert)
        self.server_cert, self.server_key = self.server("broker")

    def server(self, name):
        key = _key()
        cert = _cert(_name(CN="localhost"), key, self.ca_name, self.ca_key,
                     san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        return _write(self.d / f"{name}.pem", cert=cert), _write(self.d / f"{name}.key", key=key)

    def client(self, name, **subject):
        key = _key()
        cert = _cert(_name(**subject), key, self.ca_name, self.ca_key, client=True)
        return _write(self.d / f"{name}.pem", cert=cert), _write(self.d / f"{name}.key", key=key)
