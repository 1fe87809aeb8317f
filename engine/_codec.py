"""Encryption of every payload the engine hands to Temporal (inputs, results, saga state).

Temporal stores payloads in its database and shows them in its UI; a saga's input holds card
tokens and personal data. With ``SAGAS_ENCRYPTION_KEY`` set (32 random bytes, base64), each
payload is sealed with AES-256-GCM before it leaves the process and opened when it comes back;
the key id travels in the payload's metadata so that keys can be rotated: the newest key seals,
every listed key opens (``SAGAS_ENCRYPTION_KEY`` may hold several, comma-separated, newest
first). A payload that is not sealed (written before encryption was switched on) passes
through as it is, so switching it on needs no migration.

Failures are payloads too: with a key, the failure converter moves each failure's message and
stack trace (an activity's error text, which may echo what it was given, and the code paths
behind it) into the failure's ``encoded_attributes`` payload, which is sealed like the rest;
history then shows "Encoded failure" in their place. The SDK puts them back when it decodes a
failure, and the codec server opens them for the Temporal UI like any other payload.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

from engine._errors import EncryptionKeyError
from engine._failure_converter import FailureConverter, SealedFailureConverter

ENCODING = b"binary/encrypted"
_NONCE_BYTES = 12


def parse_keys(value: str) -> list[bytes]:
    """Keys from ``SAGAS_ENCRYPTION_KEY``: comma-separated base64, newest first."""
    keys = []
    for number, item in enumerate(part.strip() for part in value.split(",") if part.strip()):
        try:
            key = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"encryption key {number + 1} is not base64") from None
        if len(key) != 32:
            raise EncryptionKeyError(
                f"encryption key {number + 1} is {len(key)} bytes; AES-256 needs 32 "
                "(make one with: python -c 'import os,base64; "
                "print(base64.b64encode(os.urandom(32)).decode())')"
            )
        keys.append(key)
    return keys


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).hexdigest()[:16].encode()


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads; the first key seals, any key opens."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise EncryptionKeyError("no encryption key given")
        self._sealing = (_key_id(keys[0]), AESGCM(keys[0]))
        self._opening = {_key_id(k): AESGCM(k) for k in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id, cipher = self._sealing
        sealed = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), key_id)
            sealed.append(
                Payload(metadata={"encoding": ENCODING, "encryption-key-id": key_id}, data=data)
            )
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        opened = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                opened.append(payload)  # written before encryption was on
                continue
            key_id = payload.metadata.get("encryption-key-id", b"")
            cipher = self._opening.get(key_id)
            if cipher is None:
                raise EncryptionKeyError(
                    f"payload sealed with key {key_id.decode(errors='replace')}, which is not "
                    "among SAGAS_ENCRYPTION_KEY"
                )
            nonce, body = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
            try:
                plain = cipher.decrypt(nonce, body, key_id)
            except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
                raise EncryptionKeyError(
                    f"payload sealed with key {key_id.decode(errors='replace')} does not open: "
                    "it was altered, or sealed with another key"
                ) from None
            inner = Payload()
            inner.ParseFromString(plain)
            opened.append(inner)
        return opened


def data_converter(keys: Sequence[bytes] = ()) -> DataConverter:
    """The engine's data converter: pydantic, and sealed with ``keys`` when there are any
    (payloads, and failures' messages and stack traces); a BENIGN failure goes without its
    stack trace (engine._failure_converter).

    The keys come from the caller; the settings' keys are wired in by
    :meth:`engine.config.Settings.data_converter`.
    """
    if not keys:
        return _PLAIN
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=SealedFailureConverter,
    )


# Pydantic, and BENIGN failures without stack traces (engine._failure_converter).
_PLAIN = dataclasses.replace(pydantic_data_converter, failure_converter_class=FailureConverter)
