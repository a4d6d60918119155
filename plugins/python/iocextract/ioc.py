"""Indicator-of-compromise extraction and refanging: the plugin's logic, free of any WebAssembly binding.

Everything here is plain Python (standard library only), so it runs and is unit-tested natively
(`python3 -m unittest` in this directory). `app.py` wraps it into the `qila:plugin` contract.
"""

import ipaddress
import re
from urllib.parse import urlsplit

#: The largest text the actions accept, in UTF-8 bytes. Checked by the plugin, not by the schema (JSON Schema's
#: `maxLength` counts characters, not bytes).
MAX_TEXT_BYTES = 1 << 20

#: The indicator types, in output order. Each is also the key of its list in the output of `extract`.
TYPES = ("ipv4", "ipv6", "domains", "urls", "emails", "md5", "sha1", "sha256")

#: Default and largest number of indicators returned per type.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000

#: URLs longer than this are skipped (and reported through `truncated`): they are almost always encoded payloads.
MAX_URL_CHARS = 2048

#: File extensions that look like top-level domains in free text (`invoice.pdf`, `payload.exe`). A name ending in one
#: of these is taken for a file name, not a domain. Some (`zip`, `mov`) are real TLDs, but in incident notes they
#: are far more often file names.
FILE_EXTENSIONS = frozenset(
    """
    exe dll sys scr cpl ocx drv bat cmd ps1 psm1 vbs vbe js jse wsf wsh hta msi msp lnk reg inf
    jar class py pyc rb sh php asp aspx jsp cgi
    doc docx docm dot dotm xls xlsx xlsm xlsb ppt pptx pptm rtf pdf odt ods txt csv log ini cfg conf json xml
    yaml yml html htm xhtml css md
    zip rar gz tgz bz2 xz tar iso img dmg cab arj ace 7z
    png jpg jpeg gif bmp ico svg tif tiff webp mp3 mp4 mov avi mkv wav
    dat bin tmp bak old db sqlite pcap pcapng eml msg evtx elf so dylib apk ipa deb rpm
    """.split()
)


class InvalidInput(ValueError):
    """The input is not what an action accepts; `app.py` turns it into the `invalid-input` error case."""


# --- Refanging ---------------------------------------------------------------------------------------------------

# Order matters: brackets first, so that `hxxp[:]//` becomes `hxxp://` before the scheme is repaired.
_REFANG_RULES = (
    # evil[.]com, evil(.)com, evil{.}com, evil[dot]com, evil (dot) com
    (re.compile(r"\s?[\[({]\s*(?:\.|dot)\s*[\])}]\s?", re.IGNORECASE), "."),
    # evil\.com
    (re.compile(r"\\\."), "."),
    # hxxp[://]evil.com, hxxp[:]//evil.com
    (re.compile(r"\[://\]"), "://"),
    (re.compile(r"[\[(]:[\])]"), ":"),
    # user[@]example.com, user[at]example.com, user (at) example.com
    (re.compile(r"\s?[\[({]\s*(?:@|at)\s*[\])}]\s?", re.IGNORECASE), "@"),
    # hxxp://, hxxps://, hXXp://, hxtp://, h**p://, meow://  ->  http(s)://
    (re.compile(r"\b(?:h[x*]{2}p|hxtp|htxp|meow)(s?)(?=://)", re.IGNORECASE), r"http\1"),
    # fxp://  ->  ftp://
    (re.compile(r"\bfxp(s?)(?=://)", re.IGNORECASE), r"ftp\1"),
)


def refang(text):
    """Undoes the usual ways of defanging indicators (`hxxp://`, `[.]`, `(dot)`, `[:]`, `[@]`, ...).

    Returns the refanged text and the number of replacements made.
    """
    count = 0
    for pattern, replacement in _REFANG_RULES:
        text, n = pattern.subn(replacement, text)
        count += n
    return text, count


# --- Extraction --------------------------------------------------------------------------------------------------

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9a-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9a-f]{0,4})(?![\w:])",
    re.IGNORECASE,
)
_DOMAIN = re.compile(rf"(?<![\w.-])((?:{_LABEL}\.)+{_TLD})(?![\w@-])", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?|ftps?|sftp)://[^\s<>\"'`{}|\\^]+", re.IGNORECASE)
_EMAIL = re.compile(
    rf"(?<![\w.%+-])([a-z0-9_%+-][a-z0-9._%+-]{{0,63}})@((?:{_LABEL}\.)+{_TLD})(?![\w-])",
    re.IGNORECASE,
)
_HASHES = {
    name: re.compile(rf"(?<![0-9A-Za-z_])[0-9A-Fa-f]{{{length}}}(?![0-9A-Za-z_])")
    for name, length in (("md5", 32), ("sha1", 40), ("sha256", 64))
}

# Characters that end a sentence rather than a URL.
_URL_TRAILING = ".,;:!?'\"*"
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def _is_domain(name):
    """Whether `name` (lower case, matched by `_DOMAIN`) is a plausible domain rather than a file name."""
    return len(name) <= 253 and name.rsplit(".", 1)[-1] not in FILE_EXTENSIONS


def _ipv4s(text):
    for m in _IPV4.finditer(text):
        try:
            yield str(ipaddress.IPv4Address(m.group(0)))
        except ValueError:
            continue


def _ipv6s(text):
    for m in _IPV6.finditer(text):
        candidate = m.group(0)
        if sum(c.isalnum() for c in candidate) < 2:
            continue  # `::`, `a::`: technically addresses, in prose almost never meant as one
        try:
            yield ipaddress.IPv6Address(candidate).compressed
        except ValueError:
            continue


def _domains(text):
    for m in _DOMAIN.finditer(text):
        name = m.group(1).lower()
        if _is_domain(name):
            yield name


def _trim_url(url):
    """Removes the punctuation that ends the sentence around a URL, and closing brackets it did not open."""
    while url:
        last = url[-1]
        if last in _URL_TRAILING:
            url = url[:-1]
        elif last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last]):
            url = url[:-1]
        else:
            break
    return url


def _urls(text, skipped):
    for m in _URL.finditer(text):
        url = _trim_url(m.group(0))
        if len(url) > MAX_URL_CHARS:
            skipped.append(url)
            continue
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            continue
        if not host:
            continue
        if "." not in host and ":" not in host:
            continue  # `http://intranet/`: not an indicator
        yield parts.scheme.lower() + url[len(parts.scheme) :]


def _emails(text):
    for m in _EMAIL.finditer(text):
        local, domain = m.group(1), m.group(2).lower()
        if _is_domain(domain):
            yield f"{local}@{domain}"


def _hashes(name):
    def find(text):
        for m in _HASHES[name].finditer(text):
            yield m.group(0).lower()

    return find


def _unique(items, limit):
    """The first `limit` distinct items, in order of first appearance, and whether any were left out."""
    seen = {}
    for item in items:
        if item in seen:
            continue
        if len(seen) == limit:
            return list(seen), True
        seen[item] = None
    return list(seen), False


def check_text(value, field="text"):
    """Returns `value` if it is a string of at most `MAX_TEXT_BYTES` UTF-8 bytes; raises `InvalidInput` if not."""
    if not isinstance(value, str):
        raise InvalidInput(f"at `{field}`: expected a string")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(
            f"at `{field}`: the text is {size} bytes long; the limit is {MAX_TEXT_BYTES} bytes (1 MiB): "
            "split it into several calls"
        )
    return value


def extract(text, types=None, limit=DEFAULT_LIMIT):
    """Finds the indicators of `types` (default: all of `TYPES`) in `text`, which may be defanged.

    Returns a dict with one list per requested type (distinct values, in order of first appearance, at most `limit`
    each) and `truncated`, true when some were left out (over `limit`, or URLs over `MAX_URL_CHARS`). Raises
    `InvalidInput` for a text over `MAX_TEXT_BYTES`, an unknown type or a limit out of range.
    """
    check_text(text)
    if types is None:
        types = TYPES
    if not isinstance(types, (list, tuple)) or not types:
        raise InvalidInput("at `types`: expected a non-empty list of indicator types")
    for t in types:
        if t not in TYPES:
            raise InvalidInput(f"at `types`: unknown type {t!r}; expected one of {', '.join(TYPES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"at `limit`: expected an integer from 1 to {MAX_LIMIT}")

    text, _ = refang(text)
    skipped = []
    finders = {
        "ipv4": _ipv4s,
        "ipv6": _ipv6s,
        "domains": _domains,
        "urls": lambda t: _urls(t, skipped),
        "emails": _emails,
        "md5": _hashes("md5"),
        "sha1": _hashes("sha1"),
        "sha256": _hashes("sha256"),
    }
    out = {}
    truncated = False
    for t in TYPES:
        if t in types:
            out[t], cut = _unique(finders[t](text), limit)
            truncated = truncated or cut
    out["truncated"] = truncated or bool(skipped)
    return out
