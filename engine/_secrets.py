"""API keys that must not guard a production API: placeholders and short ones.

The placeholders are the ones this repository ships (deploy/k8s/base/secret.yaml,
deploy/.env.example): a deployment that forgot to replace them must not start.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

#: The shortest API key production accepts (development: 16, see api.auth).
MIN_PRODUCTION_KEY_CHARS = 32
#: Secrets copied from our own examples, compared case-insensitively.
PLACEHOLDERS = frozenset(
    {
        "replace-me",
        "change-me",
        "change-me-to-a-long-random-key",
        "replace-with-base64-of-32-random-bytes",
        "changeme",
        "secret",
    }
)


def split_key(entry: str) -> tuple[str | None, str]:
    """``name:secret`` as (name, secret); a bare secret has no name."""
    name, sep, secret = entry.partition(":")
    return (name, secret) if sep else (None, entry)


def weak_api_keys(entries: Iterable[SecretStr | str]) -> list[str]:
    """Why each weak key is weak, naming the key by its name or position, never its value."""
    problems = []
    for number, entry in enumerate(entries, start=1):
        raw = entry.get_secret_value() if isinstance(entry, SecretStr) else entry
        name, secret = split_key(raw)
        label = f"API key {name or f'key-{number}'!r}"
        if secret.strip().lower() in PLACEHOLDERS:
            problems.append(f"{label} is a placeholder from the examples")
        elif len(secret) < MIN_PRODUCTION_KEY_CHARS:
            problems.append(f"{label} is shorter than {MIN_PRODUCTION_KEY_CHARS} characters")
    return problems
