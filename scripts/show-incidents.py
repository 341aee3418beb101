"""Prints `ewn tail --topic incidents` lines as a short table (used by the demo)."""
import json
import sys

for line in sys.stdin:
    r = json.loads(line)
    where = f"{r['topic']}/{r['partition']}@{r['offset']}"
    if not r["verified"]:
        print(f"REJECTED {r['reason']:18} {where}")
        continue
    i = r["incident"]
    refs = ", ".join(s["kind"].lower() + ":" + s["ref"][:10] + "..." for s in i["subjects"])
    print(f"verified {i['category']:20} {i['severity']:8} tlp={i['tlp']:12} {where:24} {refs}")
