"""Ed25519 keys: IONWALL's own signing key, and publisher signatures over CIDs.

IONWALL's key signs every grant token. It is created on first start as
``<data_dir>/signing_key.pem`` (PKCS#8 PEM). The file is opened with
``O_CREAT | O_EXCL`` and mode 0600 under a temporary name, filled, synced and
then hard-linked into place, so it is never readable by anyone else, not even
for an instant, and two processes starting at once end up with the same key.
A key file that others may read is refused (``KeyFileError``).

Publishers sign transforms: the signature is Ed25519 over the UTF-8 bytes of
the CID string exactly as published (e.g. ``bafkrei…``, no newline, no
prefix). Keys are written ``ed25519:<base64url of the 32 raw bytes>`` and
signatures as the base64url of the 64 raw bytes, both without padding.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ._errors import KeyFileError

KEY_FILE = "signing_key.pem"
_PREFIX = "ed25519:"


def load_or_create_key(directory: Path) -> Ed25519PrivateKey:
    """IONWALL's signing key in ``directory``, created (mode 0600) if absent."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / KEY_FILE
    if not path.exists():
        _create(path)
    return _load(path)


def _create(path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create the signing key: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, 0o600)  # umask can only narrow it; be explicit anyway
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            pass
    except OSError as exc:  # a full disk, say: no key, and no half-written one left behind
        raise KeyFileError(f"{path}: cannot create the signing key: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _load(path: Path) -> Ed25519PrivateKey:
    try:
        info = path.stat()
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise KeyFileError(
                f"{path}: the signing key is readable by others "
                f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}`"
            )
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the signing key: {exc}") from exc
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: the signing key is not an Ed25519 key")
    return key


def encode_public_key(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64url>``, the form policies and prompts use."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _PREFIX + _b64(raw)


def decode_public_key(text: str) -> Ed25519PublicKey:
    """Reads ``ed25519:<base64url>``; raises ``ValueError`` saying what is wrong."""
    if not text.startswith(_PREFIX):
        raise ValueError(f"a publisher key starts with {_PREFIX!r}: {text!r}")
    raw = _unb64(text[len(_PREFIX) :])
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}: {text!r}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint (the ``kid`` of tokens): sha256 of the raw key, 16 hex digits."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_cid(key: Ed25519PrivateKey, cid: str) -> str:
    """A publisher's signature of ``cid``: base64url of Ed25519 over ``cid.encode()``."""
    return _b64(key.sign(cid.encode("utf-8")))


def verify_cid_signature(publisher: str, cid: str, signature: str) -> bool:
    """True only when ``signature`` is ``publisher``'s signature over ``cid``.

    A malformed key or signature is simply not a valid signature.
    """
    try:
        key = decode_public_key(publisher)
        key.verify(_unb64(signature), cid.encode("utf-8"))
    except (ValueError, InvalidSignature):
        return False
    return True


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {text!r}") from exc
