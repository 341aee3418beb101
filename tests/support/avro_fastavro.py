#!/usr/bin/env python3
"""EWN's schemas and records as an independent Avro implementation (fastavro) sees them.

Usage:
  avro_fastavro.py fingerprints SCHEMA.avsc...
      one line per schema: file name, CRC-64-AVRO fingerprint (hex of the 8 bytes as
      single-object encoding carries them, little-endian), Parsing Canonical Form
  avro_fastavro.py read SCHEMA_DIR RECORD...
      decodes each single-object-encoded record file by looking its schema up by fingerprint
      among SCHEMA_DIR/*.avsc, as a third-party consumer would; prints one JSON object a line:
      {"file", "schema", "value"}, or {"file", "error"}; bytes and fixed values as lists of
      numbers and timestamps as epoch milliseconds (what serde_json makes of EWN's types)

Exit status: 0 when everything was read; 1 when a record could not be; 2 when this script
cannot run (missing fastavro, bad arguments), so a caller never mistakes a broken set-up for
a verdict.
"""

import datetime
import glob
import io
import json
import os
import sys

try:
    from fastavro import schemaless_reader
    from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
except ImportError as e:
    print(f"avro_fastavro: cannot import fastavro ({e}); run `make test-deps`", file=sys.stderr)
    sys.exit(2)


def load(path):
    with open(path, encoding="utf-8") as f:
        schema = parse_schema(json.load(f))
    form = to_parsing_canonical_form(schema)
    return schema, form, fingerprint(form, "CRC-64-AVRO")


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        # timestamp-millis comes back as a datetime: back to epoch milliseconds, exactly.
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    return value


def main(argv):
    if len(argv) >= 2 and argv[0] == "fingerprints":
        for path in argv[1:]:
            _, form, fp = load(path)
            print(os.path.basename(path), fp, form)
        return 0
    if len(argv) >= 3 and argv[0] == "read":
        by_fp = {}
        for path in sorted(glob.glob(os.path.join(argv[1], "*.avsc"))):
            schema, _, fp = load(path)
            by_fp[fp] = schema
        failed = False
        for path in argv[2:]:
            with open(path, "rb") as f:
                data = f.read()
            out = {"file": os.path.basename(path)}
            if data[:2] != b"\xc3\x01":
                out["error"] = "no single-object marker"
            elif data[2:10].hex() not in by_fp:
                out["error"] = f"unknown fingerprint {data[2:10].hex()}"
            else:
                schema = by_fp[data[2:10].hex()]
                body = io.BytesIO(data[10:])
                try:
                    out["schema"] = schema["name"]
                    out["value"] = plain(schemaless_reader(body, schema, None))
                    if body.read(1):
                        out["error"] = "trailing bytes"
                except Exception as e:  # any decoding failure is this record's verdict
                    out["error"] = f"{type(e).__name__}: {e}"
            failed |= "error" in out
            print(json.dumps(out, sort_keys=True))
        return 1 if failed else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
