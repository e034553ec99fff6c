"""OCSP (RFC 6960, RFC 5019 lightweight profile): the codec, the responder and its routes."""
