"""A stand-in identity provider for the JWT tests: signing keys made for the test, tokens signed
with them, and a local HTTP server publishing the public half as a JWK set (the key set can be
rotated, and the server slowed down, while it runs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://login.microsoftonline.com/00000000-test-tenant/v2.0"
AUDIENCE = "api://llamakey"


@dataclass
class SigningKey:
    """A private key of the test identity provider, with its ``kid`` and algorithm."""

    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            found: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            found = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**found, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header}
        )


def claims(subject: str, **changes: Any) -> dict[str, Any]:
    """The claims of a valid token for `subject` (Entra ID style: ``oid``), with `changes`
    (None removes a claim)."""
    now = int(time.time())
    found: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "oid": subject,
        "sub": f"pairwise-{subject}",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    found.update(changes)
    return {k: v for k, v in found.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any]) -> str:
    """A token with ``alg: none`` and no signature."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{_b64(json.dumps(payload).encode())}."


def hmac_with_public_key(key: SigningKey, payload: dict[str, Any]) -> str:
    """The classic forgery: HS256 with the (public) PEM key as the HMAC secret. PyJWT refuses
    to make one, so it is put together here."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(key.public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def tampered(token: str, **changes: Any) -> str:
    """`token` with its payload changed and its signature kept."""
    head, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    return f"{head}.{_b64(json.dumps(payload).encode())}.{signature}"


@dataclass
class JwksServer:
    """Serves ``GET /keys`` (the JWK set of `keys`) on a free loopback port and counts
    fetches; while `gate` is an unset Event, each answer waits for it (a slow identity
    provider, released by the test)."""

    keys: list[SigningKey]
    gate: threading.Event | None = None
    tls: trustme.CA | None = None  # serve HTTPS with a certificate for "localhost" from it
    fetches: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"https://localhost:{port}/keys" if self.tls else f"http://127.0.0.1:{port}/keys"

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                if owner.gate is not None:
                    owner.gate.wait(30)
                body = json.dumps({"keys": [k.jwk() for k in owner.keys]}).encode()
                self.send_response(200 if self.path == "/keys" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.issue_cert("localhost").configure_cert(context)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
