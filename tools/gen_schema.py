#!/usr/bin/env python3
"""Generate mdmd's compact schema table from Apple's device-management YAML.

Reads ../shared/apple-device-management/mdm/{commands,checkin} and writes
src/protocol/schema.json: for every command (by RequestType) its request and
response key trees, and for every check-in MessageType its key tree. Only
facts are kept (key name, type, required-ness, allowed values); no description
text is copied.

Usage: python3 tools/gen_schema.py [SCHEMA_DIR] [OUT]
"""
import json
import os
import sys

import yaml

TYPES = {
    "<string>": "s", "<integer>": "i", "<boolean>": "b", "<data>": "d",
    "<date>": "t", "<array>": "a", "<dictionary>": "D", "<real>": "r",
    "<any>": "*", "<hostname>": "s", "<url>": "s",
}


def keys(items):
    out = []
    for k in items or []:
        # "ANY", "ANY app identifier", …: a wildcard for any key name.
        name = "ANY" if k["key"].startswith("ANY") else k["key"]
        e = {"n": name, "t": TYPES.get(k.get("type", "<any>"), "*")}
        if k.get("presence") == "required":
            e["r"] = 1
        rl = k.get("rangelist")
        if rl and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in rl):
            e["v"] = rl
        sub = keys(k.get("subkeys"))
        if sub:
            e["s"] = sub
        out.append(e)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "apple-device-management")
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "src", "protocol", "schema.json")
    table = {"commands": {}, "checkin": {}}
    cdir = os.path.join(src, "mdm", "commands")
    for name in sorted(os.listdir(cdir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(cdir, name)) as f:
            doc = yaml.safe_load(f)
        payload = doc.get("payload", {})
        rt = payload.get("requesttype")
        if not rt:
            continue
        ios = payload.get("supportedOS", {}).get("iOS", {})
        table["commands"][rt] = {
            "file": name,
            "ios": ios.get("introduced", "n/a") != "n/a",
            "req": keys(doc.get("payloadkeys")),
            "resp": keys(doc.get("responsekeys")),
        }
    kdir = os.path.join(src, "mdm", "checkin")
    for name in sorted(os.listdir(kdir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(kdir, name)) as f:
            doc = yaml.safe_load(f)
        mt = None
        for k in doc.get("payloadkeys") or []:
            if k["key"] == "MessageType":
                rl = k.get("rangelist") or []
                mt = rl[0] if rl else None
        if not mt:
            mt = doc.get("payload", {}).get("requesttype") or os.path.splitext(name)[0]
        table["checkin"][mt] = {"file": name, "keys": keys(doc.get("payloadkeys"))}
    with open(dst, "w") as f:
        json.dump(table, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {dst}: {len(table['commands'])} commands, {len(table['checkin'])} check-in messages")


if __name__ == "__main__":
    main()
