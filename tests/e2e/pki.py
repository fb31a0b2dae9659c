"""A certificate authority for tests, made with the openssl command line.

Pki(directory) makes a CA there; server_cert() makes certificates it signs for 127.0.0.1 (and
other names when asked). Used by the HTTPS tests (test_tls.py) and by the PostgreSQL test
servers (pgharness.py).
"""

import subprocess


def openssl(*args, cwd):
    cp = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, f"openssl {' '.join(map(str, args))}:\n{cp.stderr}"


class Pki:
    """A CA in directory d, and server certificates it signs (EC P-256 keys)."""

    def __init__(self, d, name="ca"):
        self.dir = d
        d.mkdir(exist_ok=True)
        self.ca = d / f"{name}.pem"
        self.ca_key = d / f"{name}.key"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                "-subj", f"/CN=opsdb test {name}", cwd=d)

    def server_cert(self, name, serial, key=None, alt_names="IP:127.0.0.1"):
        """(cert, key) for 127.0.0.1 signed by this CA with the given serial; a new key unless
        key (the path of an existing one) is given. alt_names is the subjectAltName value
        (e.g. "IP:127.0.0.1,DNS:localhost")."""
        cert = self.dir / f"{name}.pem"
        csr = self.dir / f"{name}.csr"
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName={alt_names}\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        if key is None:
            key = self.dir / f"{name}.key"
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1", cwd=self.dir)
        else:
            openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=127.0.0.1",
                    cwd=self.dir)
        openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-set_serial",
                str(serial), "-days", "2", "-extfile", ext, "-out", cert, cwd=self.dir)
        return cert, key
