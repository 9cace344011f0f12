#!/usr/bin/env python3
"""Generate src/protocol/ade.json from Apple's device-management YAML (other/).

Keeps facts only: every Setup Assistant skip key (by name: the OSes that
know it), and the MachineInfo keys a device sends when it fetches its ADE
enrollment profile (name, type, required-ness, the iOS version that
introduced it when later than the payload itself).

Usage: python3 tools/gen_ade.py [SCHEMA_DIR] [OUT]
"""
import json
import os
import sys

import yaml

OSES = ["iOS", "macOS", "tvOS", "visionOS", "watchOS"]


def supported(k, parent):
    """The OSes a key is available on: its own `introduced`, or (not given) the payload's."""
    out = []
    for o in OSES:
        v = ((k.get("supportedOS") or {}).get(o) or {}).get("introduced")
        if v is None:
            v = ((parent.get("supportedOS") or {}).get(o) or {}).get("introduced")
        if v and v != "n/a":
            out.append(o)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "apple-device-management")
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "src", "protocol", "ade.json")
    with open(os.path.join(src, "other", "skipkeys.yaml")) as f:
        skip = yaml.safe_load(f)
    with open(os.path.join(src, "other", "machineinfo.yaml")) as f:
        mi = yaml.safe_load(f)
    out = {"skip_keys": {}, "machine_info": []}
    for k in skip.get("payloadkeys") or []:
        out["skip_keys"][k["key"]] = supported(k, skip["payload"])
    for k in mi.get("payloadkeys") or []:
        e = {"n": k["key"], "t": k.get("type", "<string>").strip("<>")}
        if k.get("presence") == "required":
            e["r"] = 1
        ios = ((k.get("supportedOS") or {}).get("iOS") or {}).get("introduced")
        if ios:
            e["ios"] = ios
        out["machine_info"].append(e)
    with open(dst, "w") as f:
        json.dump(out, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {dst}: {len(out['skip_keys'])} skip keys, {len(out['machine_info'])} machine-info keys")


if __name__ == "__main__":
    main()
