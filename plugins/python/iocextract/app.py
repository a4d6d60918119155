"""The `iocextract` plugin for Qila: finds indicators of compromise in free text.

This module is the component's entry point: componentize-py looks up the class `WitWorld` here and exports its
`describe` and `invoke` methods as the `qila:plugin` contract's exports. The logic lives in `ioc.py`.
"""

import json
import traceback

from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import log, types

import ioc

#: The plugin's version (semantic versioning).
VERSION = "0.1.0"

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"

_TEXT = {
    "type": "string",
    "description": (
        "Free text: an e-mail, a ticket, a threat report. Defanged indicators (`hxxp://`, `1.2.3[.]4`, "
        "`example[.]com`, `user[@]example.com`) are recognised. At most 1 MiB of UTF-8."
    ),
}

_STRINGS = {"type": "array", "items": {"type": "string"}}

EXTRACT_INPUT = {
    "$schema": _SCHEMA,
    "title": "ExtractInput",
    "type": "object",
    "properties": {
        "text": _TEXT,
        "types": {
            "type": "array",
            "description": "The indicator types to look for; default: all of them. Each is also its output key.",
            "items": {"type": "string", "enum": list(ioc.TYPES)},
            "minItems": 1,
            "uniqueItems": True,
        },
        "limit": {
            "type": "integer",
            "description": (
                f"At most this many indicators per type (default {ioc.DEFAULT_LIMIT}); `truncated` says when "
                "some were left out."
            ),
            "minimum": 1,
            "maximum": ioc.MAX_LIMIT,
        },
    },
    "required": ["text"],
    "additionalProperties": False,
}

_DESCRIPTIONS = {
    "ipv4": "IPv4 addresses, dotted-quad.",
    "ipv6": "IPv6 addresses, in compressed lower-case form.",
    "domains": "Domain names in lower case, including those inside URLs and e-mail addresses.",
    "urls": "http, https, ftp(s) and sftp URLs, with the scheme in lower case.",
    "emails": "E-mail addresses, with the domain in lower case.",
    "md5": "MD5 hashes (32 hex digits), lower case.",
    "sha1": "SHA-1 hashes (40 hex digits), lower case.",
    "sha256": "SHA-256 hashes (64 hex digits), lower case.",
}

EXTRACT_OUTPUT = {
    "$schema": _SCHEMA,
    "title": "ExtractOutput",
    "description": "One list per requested type: distinct values in order of first appearance.",
    "type": "object",
    "properties": {
        **{t: {**_STRINGS, "description": _DESCRIPTIONS[t]} for t in ioc.TYPES},
        "truncated": {
            "type": "boolean",
            "description": "Whether some indicators were left out (over `limit`, or URLs over 2048 characters).",
        },
    },
    "required": ["truncated"],
    "additionalProperties": False,
}

REFANG_INPUT = {
    "$schema": _SCHEMA,
    "title": "RefangInput",
    "type": "object",
    "properties": {"text": _TEXT},
    "required": ["text"],
    "additionalProperties": False,
}

REFANG_OUTPUT = {
    "$schema": _SCHEMA,
    "title": "RefangOutput",
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "The text with its indicators refanged."},
        "replacements": {
            "type": "integer",
            "minimum": 0,
            "description": "How many defanged fragments were repaired.",
        },
    },
    "required": ["text", "replacements"],
    "additionalProperties": False,
}

EXTRACT_EXAMPLE = {
    "text": (
        "Phish from billing[@]example[.]com links to hxxps://login.example[.]net/verify?id=7 and beacons to "
        "198.51.100[.]23 and 2001:db8::bad:1. Dropper MD5 44d88612fea8a8f36de82e1278abb02f, "
        "SHA1 3395856ce81f2b7382dee72602f798b642f14140, "
        "SHA256 275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f."
    )
}

REFANG_EXAMPLE = {"text": "Blocked hxxp://evil[.]example[.]com/a and 203.0.113[.]7 (admin[at]example[.]org)."}


def _action(name, summary, input_schema, output_schema, example):
    return types.ActionInfo(
        name=name,
        summary=summary,
        input_schema=json.dumps(input_schema),
        output_schema=json.dumps(output_schema),
        example_input=json.dumps(example),
    )


def _object(text, allowed):
    """Parses the input JSON into a dict with no keys beyond `allowed`, or raises `ioc.InvalidInput`."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ioc.InvalidInput(f"the input is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ioc.InvalidInput("the input must be a JSON object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ioc.InvalidInput(f"unknown field `{unknown[0]}`; expected one of {', '.join(allowed)}")
    if "text" not in value:
        raise ioc.InvalidInput("missing field `text`")
    return value


def _extract(text):
    args = _object(text, ("text", "types", "limit"))
    return ioc.extract(args["text"], args.get("types"), args.get("limit", ioc.DEFAULT_LIMIT))


def _refang(text):
    args = _object(text, ("text",))
    refanged, count = ioc.refang(ioc.check_text(args["text"]))
    return {"text": refanged, "replacements": count}


_ACTIONS = {"extract": _extract, "refang": _refang}


class WitWorld(_World):
    """The component's exports."""

    def describe(self) -> types.Manifest:
        """The manifest: pure, no host calls."""
        return types.Manifest(
            name="iocextract",
            version=VERSION,
            vendor="Qila",
            description=(
                "Finds indicators of compromise in free text (IPv4 and IPv6 addresses, domains, URLs, e-mail "
                "addresses, MD5/SHA-1/SHA-256 hashes), defanged or not, and refangs defanged text. Pure: it "
                "imports no network, secret or storage interface. Written in Python, built with componentize-py."
            ),
            actions=[
                _action(
                    "extract",
                    "Finds IP addresses, domains, URLs, e-mail addresses and hashes in free text, defanged or not.",
                    EXTRACT_INPUT,
                    EXTRACT_OUTPUT,
                    EXTRACT_EXAMPLE,
                ),
                _action(
                    "refang",
                    "Repairs defanged indicators in a text (hxxp://, [.], (dot), [:], [@]).",
                    REFANG_INPUT,
                    REFANG_OUTPUT,
                    REFANG_EXAMPLE,
                ),
            ],
        )

    def invoke(self, action: str, input: str, context: types.InvocationContext) -> str:
        """Runs `action`; failures are raised as `Err(types.Error_...)`, which the host receives as `error`."""
        run = _ACTIONS.get(action)
        if run is None:
            raise Err(types.Error_NotFound(f"plugin `iocextract` has no action `{action}`"))
        try:
            output = run(input)
        except ioc.InvalidInput as e:
            raise Err(types.Error_InvalidInput(str(e))) from None
        except Exception as e:  # a bug: report it as `failed` with its traceback in the run's log, not as a trap
            log.log(log.Level.ERROR, traceback.format_exc(limit=8))
            raise Err(types.Error_Failed(f"internal error in `{action}`: {type(e).__name__}: {e}")) from None
        if action == "extract":
            found = sum(len(v) for v in output.values() if isinstance(v, list))
            log.log(log.Level.DEBUG, f"extract: {found} indicator(s) (attempt {context.attempt})")
        return json.dumps(output)
