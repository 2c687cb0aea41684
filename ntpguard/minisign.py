"""minisign's file formats: key pairs, signatures, verifying and signing (Ed25519).

One module for the format, so what `list export --sign` writes and what a subscription
checks cannot drift apart. The formats are minisign 0.11's (its README, "Signature format"
and "Public key format"; key layout from minisign.c's SeckeyStruct), checked against the real
`minisign` tool in tests/test_minisign.py both ways:

public key  `untrusted comment: ...`, base64("Ed" keyid[8] pk[32])
secret key  `untrusted comment: ...`, base64("Ed" kdf[2] "B2" salt[32] opslimit[8]
            memlimit[8] keyid[8] sk[64] chk[32]); kdf "\\0\\0" is unencrypted (`minisign -G
            -W`), "Sc" scrypt-encrypted with a password; sk is libsodium's seed[32] pk[32];
            chk = BLAKE2b-256("Ed" keyid sk)
signature   `untrusted comment: ...`, base64(alg[2] keyid[8] sig[64]),
            `trusted comment: ...`, base64(global sig[64] over sig + trusted comment);
            alg "ED" signs BLAKE2b-512 of the data (prehashed, minisign's default), "Ed" the
            data itself (legacy)

Ed25519 comes from python3-cryptography (Debian 12: 38.x), imported only when a key is used,
so hosts that never check a signature do not need it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any

from ntpguard.errors import NtpguardError
from ntpguard.records import record

_ED = b"Ed"          # the signature algorithm of every key
_PREHASHED = b"ED"   # a signature over BLAKE2b-512 of the data
_KDF_NONE = b"\0\0"
_KDF_SCRYPT = b"Sc"
_CHK_BLAKE2 = b"B2"
_SECRET_LEN = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32  # 158 bytes
# A minisign file is a few short lines; anything longer is not one.
MAX_KEY_BYTES = 4096


class SignatureError(NtpguardError):
    """A key or signature that is malformed, or a signature that does not match."""


class SecretKeyError(NtpguardError):
    """A secret key ntpguard cannot use (unreadable, encrypted, damaged)."""

    exit_code = 2


@record
class PublicKey:
    """A minisign public key: its id and Ed25519 key."""

    key_id: bytes  # 8 bytes, as stored (minisign prints them reversed, in hex)
    key: bytes     # Ed25519, 32 bytes

    @property
    def id_hex(self) -> str:
        return key_id_hex(self.key_id)

    def line(self) -> str:
        """The base64 line (`RW...`): what `[[lists.subscriptions]] pubkey` takes."""
        return base64.b64encode(_ED + self.key_id + self.key).decode()

    def file_text(self) -> str:
        return f"untrusted comment: minisign public key {self.id_hex}\n{self.line()}\n"


@record
class SecretKey:
    """A minisign secret key, unencrypted: its id and Ed25519 seed."""

    key_id: bytes
    seed: bytes    # the Ed25519 private key (32 bytes); the public half is derived from it

    def public(self) -> PublicKey:
        return PublicKey(self.key_id, _public_bytes(self.seed))

    def file_text(self) -> str:
        pk = _public_bytes(self.seed)
        sk = self.seed + pk
        chk = hashlib.blake2b(_ED + self.key_id + sk, digest_size=32).digest()
        raw = (_ED + _KDF_NONE + _CHK_BLAKE2 + bytes(32 + 8 + 8) + self.key_id + sk + chk)
        return ("untrusted comment: minisign secret key (unencrypted, made by ntpguard)\n"
                + base64.b64encode(raw).decode() + "\n")


def key_id_hex(key_id: bytes) -> str:
    return key_id[::-1].hex().upper()


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SignatureError("minisign signatures need python3-cryptography, which is not "
                             "installed (apt-get install python3-cryptography)") from None
    return ed25519


def _public_bytes(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = _crypto().Ed25519PrivateKey.from_private_bytes(seed)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(text: str, what: str, length: int, error: type = SignatureError) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{what} is not base64") from None
    if len(raw) != length:
        raise error(f"{what} has {len(raw)} bytes, expected {length}")
    return raw


def _payload_lines(text: str) -> list[str]:
    return [ln for ln in text.strip().splitlines()
            if ln.strip() and not ln.startswith("untrusted comment:")]


# -- keys ----------------------------------------------------------------------------------------


def parse_pubkey(text: str) -> PublicKey:
    """A minisign public key: the .pub file or its base64 line."""
    lines = _payload_lines(text)
    if len(lines) != 1:
        raise SignatureError("public key: expected one base64 line (RW...)")
    raw = _b64(lines[0], "public key", 42)
    if raw[:2] != _ED:
        raise SignatureError("public key: not an Ed25519 minisign key")
    return PublicKey(raw[2:10], raw[10:])


def parse_secret_key(text: str, path: str) -> SecretKey:
    """A minisign secret key file (unencrypted: `ntpguard list keygen`, `minisign -G -W`).

    An encrypted key is refused: ntpguard signs from a timer, where nobody types a password,
    and a password stored beside the key would protect nothing.
    """
    lines = _payload_lines(text)
    if len(lines) != 1:
        raise SecretKeyError(f"{path}: not a minisign secret key (expected one base64 "
                             "line)")
    raw = _b64(lines[0], f"{path}: secret key", _SECRET_LEN, SecretKeyError)
    sig_alg, kdf, chk_alg = raw[0:2], raw[2:4], raw[4:6]
    key_id, sk, chk = raw[54:62], raw[62:126], raw[126:158]
    if sig_alg != _ED or chk_alg != _CHK_BLAKE2:
        raise SecretKeyError(f"{path}: not an Ed25519 minisign secret key")
    if kdf == _KDF_SCRYPT:
        raise SecretKeyError(f"{path}: the key is password-protected; ntpguard signs "
                             "unattended, so it needs an unencrypted key (ntpguard list keygen, "
                             "or minisign -G -W)")
    if kdf != _KDF_NONE:
        raise SecretKeyError(f"{path}: unknown key encryption {kdf!r}")
    # minisign -G -W leaves the checksum zero; a key that has one must match it.
    if chk != bytes(32) and chk != hashlib.blake2b(sig_alg + key_id + sk,
                                                   digest_size=32).digest():
        raise SecretKeyError(f"{path}: secret key damaged (checksum mismatch)")
    key = SecretKey(key_id, sk[:32])
    if key.public().key != sk[32:]:
        raise SecretKeyError(f"{path}: secret key damaged (its public half does not match)")
    return key


def generate() -> SecretKey:
    """A new key pair (the key id is random, as minisign makes it)."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    private = _crypto().Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return SecretKey(os.urandom(8), seed)


# -- signatures ----------------------------------------------------------------------------------


def sign(data: bytes, key: SecretKey, trusted_comment: str,
         untrusted_comment: str = "signature from ntpguard secret key") -> bytes:
    """A prehashed ("ED") minisign signature of data, as `minisign -S` makes it."""
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise ValueError("a trusted comment is one line")
    private = _crypto().Ed25519PrivateKey.from_private_bytes(key.seed)
    sig = private.sign(hashlib.blake2b(data, digest_size=64).digest())
    global_sig = private.sign(sig + trusted_comment.encode("utf-8"))
    return (f"untrusted comment: {untrusted_comment}\n"
            f"{base64.b64encode(_PREHASHED + key.key_id + sig).decode()}\n"
            f"trusted comment: {trusted_comment}\n"
            f"{base64.b64encode(global_sig).decode()}\n").encode()


def verify(data: bytes, signature: bytes, pubkey: str) -> str:
    """Check a minisign signature (prehashed `ED` or legacy `Ed`); return the trusted comment.

    Both signatures must hold: the one over the data, and the global one over it and the
    trusted comment (so the comment, which says when and what was signed, cannot be swapped).
    """
    ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    public = parse_pubkey(pubkey)
    try:
        lines = signature.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise SignatureError("signature file is not UTF-8 text") from None
    if len(lines) < 4 or not lines[0].startswith("untrusted comment:") \
            or not lines[2].startswith("trusted comment: "):
        raise SignatureError("signature file is not in minisign format")
    sig = _b64(lines[1], "signature", 74)
    global_sig = _b64(lines[3], "global signature", 64)
    alg, sig_key_id, sig_bytes = sig[:2], sig[2:10], sig[10:]
    if sig_key_id != public.key_id:
        raise SignatureError(f"signed with key {key_id_hex(sig_key_id)}, "
                             f"expected {public.id_hex}")
    if alg == _PREHASHED:
        message = hashlib.blake2b(data, digest_size=64).digest()
    elif alg == _ED:
        message = bytes(data)  # cryptography 38 takes bytes only, a list arrives in a bytearray
    else:
        raise SignatureError(f"unknown signature algorithm {alg!r}")
    trusted = lines[2][len("trusted comment: "):]
    key = ed25519.Ed25519PublicKey.from_public_bytes(public.key)
    try:
        key.verify(sig_bytes, message)
    except InvalidSignature:
        raise SignatureError("signature does not match the list") from None
    try:
        key.verify(global_sig, sig_bytes + trusted.encode("utf-8"))
    except InvalidSignature:
        raise SignatureError("trusted comment was altered (global signature invalid)") from None
    return trusted


def trusted_comment(timestamp: float, name: str, entries: int) -> str:
    """What `list export --sign` signs besides the list: minisign's own `timestamp:` and
    `file:` fields (what `minisign -V` prints), and the number of entries."""
    safe = "".join(c if c.isprintable() and c != "\t" else "_" for c in name)
    return f"timestamp:{int(timestamp)}\tfile:{safe}\tentries:{entries}\thashed"


def comment_fields(trusted: str) -> dict[str, str]:
    """`timestamp:1\tfile:x` → {"timestamp": "1", "file": "x"} (unknown text: no fields)."""
    out = {}
    for part in trusted.split("\t"):
        key, sep, value = part.partition(":")
        if sep:
            out[key] = value
    return out
