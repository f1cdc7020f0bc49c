"""The shared false-positive filter: documented examples, placeholders, hashes, UUIDs, code references.

Specific rules (a token with a vendor prefix) only go through the example, placeholder and
documentation-host checks; generic rules (`password = ...`) also go through the name and shape
checks: a name that describes a secret (`password_file`, `max_tokens`), code naming a secret held
elsewhere, UUIDs, crypt(3) hashes, paths, and hex digests or lockfile hashes in a hash context.
"""

from __future__ import annotations

import math
import re
from collections import Counter

#: Keys published in vendor documentation; they appear in countless READMEs and tests.
KNOWN_EXAMPLES = frozenset(
    {
        "AKIAIOSFODNN7EXAMPLE",
        "AKIAI44QH8DHBEXAMPLE",
        "ASIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "pk_test_TYooMQauvdEDq54NiTphI7jx",
        "sk_test_BQokikJOvBiI2HlWgH4olfQ2",
        "xoxb-not-a-real-token-this-will-not-work",
        "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",
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        "gho_16C7e42F292c6912E7710c838347Ae178B4a",
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        # RFC 6749 / RFC 6750 examples, reproduced by every OAuth library's docs
        "2YotnFZFEjr1zCsicMWpAA",
        "tGzv3JOkF0XG5Qx2TlKWIA",
        "czZCaGRSa3F0MzpnWDFmQmF0M2JW",
        "mF_9.B5f-4.1JqM",
        "SplxlOBeZQQYbYS6WxSbIA",
        # jwt.io's and PyJWT's README tokens
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzb21lIjoicGF5bG9hZCJ9.4twFt5NiznN84AWoo1d7KO1T_yoc0Z6XOpOVswacPZg",
    }
)

_PLACEHOLDER_WORDS = re.compile(
    r"""(?ix)
    changeme | change[_-]me | replace[_-]?me | your[_-]?(?:own[_-]?)?(?:api[_-]?)?
    (?:token|key|secret|password|pass|pwd)(?:[_-]?here)? | placeholder | redacted | dummy | example
    | sample | insert[_-]?(?:your|here) | fixme | todo | [xX]{4} | \*\*\* | \.\.\. | \#\#\# | not[_-]?a[_-]?real
    | fake[_-]?(?:token|key|secret|password) | secret[_-]?here | token[_-]?here | password[_-]?here
    | ^(?:password|passwd|secret|token|none|null|nil|undefined|true|false|test|testing|admin|root|default|
         pass|string|str|value|your|empty|required|optional|unknown|hidden|masked|guest|user|username|pass123)$
    """
)

# Templating and variable references: the value is a pointer to the secret, not the secret.
_REFERENCE = re.compile(
    r"""(?x)
    ^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?(?:$|[/.:]) # $VAR ${VAR} $dir/x $ns::name
    | \$\{[^}]*\}                             # ${VAR:-default}, ${{ secrets.X }}
    | \{\{.*\}\}                              # jinja / helm / GitHub expressions
    | \{%.*%\}
    | ^<[^>]*>$ | <[A-Za-z_ -]{2,}>           # <token>, <your password>
    | %\([A-Za-z_]+\)s | ^%[sd]$ | ^\{[A-Za-z_0-9]*\}$
    | ^\$\( | ^`                              # command substitution
    | ^%[a-zA-Z]/                             # systemd specifiers: %d/token is a credentials path
    | ^!vault\b                               # Ansible vault-encrypted value follows
    | ^(?:env|vault|secret|ref|op|awssm|gcpsm|azkv|file|sops)[:+]//?
    | ^(?:os\.environ|os\.getenv|getenv|process\.env|ENV\[|System\.getenv|env\()
    """
)

_CODE_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::?|->)[A-Za-z_][A-Za-z0-9_]*)+(?:\(\))?$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z_]*$")
# PKCS7PrivateKeyTypes, DEFAULT_PASSWORD2: identifiers with digits, told from `Summer2024` by their humps
_IDENT_DIGITS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HUMP = re.compile(r"[a-z0-9][A-Z]|_")
_URL = re.compile(r"^[A-Za-z][\w+.-]*://[^@\s]*$")
_SLUG = re.compile(r"^[a-z]+(?:[-_][a-z]+)+$")
_HEX = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HASH_CONTEXT = re.compile(
    r"(?i)integrity|sha(?:1|224|256|384|512)|md5|checksum|digest|--hash|\bhash\b|etag|commit|\brev(?:ision)?\b"
)
# Documentation's own hosts (RFC 2606): only the bare names, since generated and internal
# configurations commonly use subdomains such as db.internal.example.net as stand-ins for real hosts.
_EXAMPLE_HOST = re.compile(r"(?i)(?<![\w.-])(?:www\.)?example\.(?:com|org|net)(?![\w.-])")
_EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}$")
_DANGLING_ASSIGN = re.compile(r"^[A-Za-z_][\w.-]*=$")
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop", "asdfghjkl")


def shannon_entropy(value: str) -> float:
    """Bits per character; random base62 sits near 5.7, English words near 3, `aaaa` at 0."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def is_known_example(value: str) -> bool:
    return value in KNOWN_EXAMPLES or "EXAMPLE" in value


def is_placeholder(value: str) -> bool:
    """Empty, templated, masked or obviously made-up values."""
    v = value.strip()
    if len(v) < 4:
        return True
    if _REFERENCE.search(v) or _PLACEHOLDER_WORDS.search(v):
        return True
    if len(set(v.lower())) <= 3:
        return True
    low = v.lower()
    return any(seq[:8] in low for seq in _SEQUENCES)


def _class_changes(word: str) -> int:
    """How often the character class flips (lower/upper/digit): identifiers flip rarely, random text often."""
    changes = 0
    prev = ""
    for ch in word:
        cls = "d" if ch.isdigit() else "u" if ch.isupper() else "l" if ch.islower() else ""
        if cls and prev and cls != prev and not (prev == "u" and cls == "l"):  # "Password" is one word
            changes += 1
        if cls:
            prev = cls
    return changes


def is_code_reference(value: str) -> bool:
    """`settings.DB_PASSWORD`, `DEFAULT_TOKEN`, `self.token`: code naming a secret held elsewhere.

    `qne.Z50c3MZOcIUf17xQ` has the shape of an attribute access but not the look of one.
    """
    if not (
        _CODE_REFERENCE.match(value)
        or _IDENT.match(value)
        or (_IDENT_DIGITS.match(value) and _HUMP.search(value, 1))
    ):
        return False
    return all(_class_changes(part) <= max(3, len(part) // 5) for part in re.split(r"[._:>-]+", value))


def has_hash_context(line: str) -> bool:
    return bool(_HASH_CONTEXT.search(line))


_CRYPT_HASH = re.compile(r"^\$(?:2[abxy]?|argon2(?:id|i|d)|[1356]|y|gy|7|pbkdf2[\w-]*|scrypt|sha\d*)\$")
_PATH = re.compile(r"^(?:~?/|\.\.?/|[A-Za-z]:\\)[\w./\\ -]*$")
_NAME_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# A name ending in one of these holds something *about* a secret, not the secret.
_BENIGN_TAILS = frozenset(
    [
        "url",
        "uri",
        "urls",
        "endpoint",
        "host",
        "file",
        "files",
        "path",
        "dir",
        "folder",
        "name",
        "names",
        "type",
        "types",
        "id",
        "ids",
        "len",
        "length",
        "size",
        "expiry",
        "expires",
        "expire",
        "expiration",
        "expired",
        "ttl",
        "timeout",
        "lifetime",
        "age",
        "policy",
        "policies",
        "field",
        "fields",
        "env",
        "var",
        "variable",
        "header",
        "prefix",
        "suffix",
        "count",
        "kind",
        "mode",
        "hash",
        "hashed",
        "digest",
        "salt",
        "format",
        "regex",
        "pattern",
        "validator",
        "validation",
        "min",
        "max",
        "limit",
        "limits",
        "algorithm",
        "algo",
        "alg",
        "method",
        "provider",
        "store",
        "manager",
        "required",
        "enabled",
        "enable",
        "disabled",
        "reset",
        "hint",
        "label",
        "placeholder",
        "input",
        "change",
        "changed",
        "confirm",
        "confirmation",
        "updated",
        "created",
        "at",
        "version",
        "ref",
        "arn",
        "tokens",
        "secrets",
        "passwords",
        "keys",
        "rotation",
        "interval",
        "strength",
        "length_min",
        "policy_id",
        "location",
        "source",
        "sources",
        "command",
        "cmd",
        "script",
        "generator",
        "index",
        "position",
        "offset",
        "start",
        "end",
        "encoding",
        "encoded",
        "scheme",
        "schema",
        "class",
        "template",
        "cache",
        "key_id",
        "keyid",
        "mount",
        "mountpath",
        "param",
        "params",
        "parameter",
        "option",
        "options",
        "id_token_hint",
        "encryption",
        "hashes",
        "hashing",
        "hasher",
        "hook",
        "hooks",
        "prompt",
        "message",
        "msg",
        "text",
        "title",
        "description",
        "desc",
        "help",
        "error",
        "errors",
        "question",
        "example",
        "examples",
        "doc",
        "docs",
    ]
)


def _name_parts(key: str) -> list[str]:
    return [p.lower() for p in _NAME_PARTS.findall(key)]


def benign_name(key: str) -> bool:
    """`password_file`, `max_tokens`, `publicKey`, `password_hash`: names that do not hold a secret."""
    parts = _name_parts(key)
    if not parts:
        return False
    if parts[-1] in _BENIGN_TAILS:
        return True
    return any(
        p in ("public", "pub", "hash", "hashed", "salt", "digest", "checksum", "sha", "md5") for p in parts
    )


def rejects(value: str, *, generic: bool, line: str = "", key: str = "") -> bool:
    """True when a candidate secret is a known false-positive class."""
    if is_known_example(value) or is_placeholder(value):
        return True
    if line and _EXAMPLE_HOST.search(line):
        return True  # documentation: hosts reserved for examples (RFC 2606)
    if not generic:
        return False
    if key and benign_name(key):
        return True
    if any(c.isspace() for c in value) or _EMAIL.match(value) or _URL.match(value) or _SLUG.match(value):
        return True  # phrases, addresses, plain URLs and slugs (billing-db-credentials)
    if _DANGLING_ASSIGN.match(value) and is_code_reference(value[:-1]):
        return True  # `password= auth_user=`: an empty value, then the next key
    if is_code_reference(value) or _CRYPT_HASH.match(value) or _PATH.match(value):
        return True
    if _UUID.match(value):
        return True
    # A hex digest beside the word "token" may be a checksum or a real hex key: only its
    # surroundings tell. Lockfile/pip hashes always come with such a marker.
    if _HEX.match(value) or value.startswith(("sha512-", "sha384-", "sha256-", "sha1-")):
        return has_hash_context(line) or has_hash_context(key)
    return False
