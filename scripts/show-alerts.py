"""Prints `ewn tail --topic alerts` lines readably (used by the demo)."""
import json
import sys

for line in sys.stdin:
    r = json.loads(line)
    a = r.get("value") or {}
    reasons = ", ".join(f"{x['factor']} {x['contribution']:+d}" for x in a.get("reasons", []))
    print(f"{a.get('msg_type', '?'):6} {a.get('rule', '?'):22} {a.get('level', '?'):8} score {a.get('score', '?'):>3} "
          f"= {reasons}; states {','.join(a.get('states', []))}; tlp {a.get('tlp', '?')}")
