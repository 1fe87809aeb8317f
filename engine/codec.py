"""Payload encryption and Temporal's codec server protocol, for the processes that serve it."""

from engine._codec import EncryptionCodec, data_converter
from engine._codec_server import transcode

__all__ = ["EncryptionCodec", "data_converter", "transcode"]
