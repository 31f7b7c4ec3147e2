"""Claim files: the schema of a claim and the loader that checks YAML claim files
(and the same contents given as a mapping)."""

from __future__ import annotations

from mechcheck.spec.loader import (
    claim_name,
    load_claim_file,
    parse_claim_mapping,
    parse_claim_text,
)
from mechcheck.spec.schema import (
    COMMON_KEYS,
    FILE_KEYS,
    ClaimFile,
    ClaimSpec,
    KeySpec,
)

__all__ = [
    "COMMON_KEYS",
    "FILE_KEYS",
    "ClaimFile",
    "ClaimSpec",
    "KeySpec",
    "claim_name",
    "load_claim_file",
    "parse_claim_mapping",
    "parse_claim_text",
]
