#!/usr/bin/env python3
"""Generate mdmd's compact schema table from Apple's device-management YAML.

Reads ../shared/apple-device-management/mdm/{commands,checkin,profiles} and
writes src/protocol/schema.json: for every command (by RequestType) its request
and response key trees, for every check-in MessageType its key tree, and for
every configuration-profile PayloadType its key tree (plus the profile's top
level and the keys common to every payload). Only
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


MAX_DEPTH = 10


def ios_supervised(supported_os):
    """Apple's `supportedOS.iOS.supervised`: only a supervised iPhone or iPad
    accepts it (and iOS has it at all)."""
    ios = (supported_os or {}).get("iOS") or {}
    return ios.get("supervised") is True and ios.get("introduced") != "n/a"


def keys(items, depth=0, flags=True):
    # Some schemas are recursive (YAML anchors): below MAX_DEPTH a key keeps its
    # type but its subkeys are not described (anything is accepted there).
    # With `flags` (MDM commands and profiles), a key only a supervised iOS
    # device accepts gets "sup": 1, and, when Apple gives a scalar default,
    # "d": the default (a restriction left at it is a no-op anywhere).
    if depth > MAX_DEPTH:
        return []
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
        rng = k.get("range") or {}
        if isinstance(rng.get("min"), (int, float)) and not isinstance(rng.get("min"), bool):
            e["min"] = rng["min"]
        if isinstance(rng.get("max"), (int, float)) and not isinstance(rng.get("max"), bool):
            e["max"] = rng["max"]
        if flags and ios_supervised(k.get("supportedOS")):
            e["sup"] = 1
            dflt = k.get("default")
            if isinstance(dflt, (bool, int, float, str)):
                e["d"] = dflt
        sub = keys(k.get("subkeys"), depth + 1, flags)
        if sub:
            e["s"] = sub
        out.append(e)
    return out


def yaml_docs(src, sub):
    """(file name, parsed YAML) for every .yaml in src/mdm/<sub>, in name order."""
    d = os.path.join(src, "mdm", sub)
    for name in sorted(os.listdir(d)):
        if name.endswith(".yaml"):
            with open(os.path.join(d, name)) as f:
                yield name, yaml.safe_load(f)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "apple-device-management")
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "src", "protocol", "schema.json")
    table = {"commands": {}, "checkin": {}, "profiles": {}, "profile_top": [], "profile_common": []}
    for name, doc in yaml_docs(src, "commands"):
        payload = doc.get("payload", {})
        rt = payload.get("requesttype")
        if not rt:
            continue
        ios = payload.get("supportedOS", {}).get("iOS", {})
        table["commands"][rt] = {
            "file": name,
            "ios": ios.get("introduced", "n/a") != "n/a",
            # Refused by an iOS User Enrollment (a personal device): Apple's `userenrollment.mode`.
            "ue_forbidden": (ios.get("userenrollment") or {}).get("mode") == "forbidden",
            # Only a supervised iOS device accepts it: Apple's `supervised`.
            "supervised": ios_supervised(payload.get("supportedOS")),
            "req": keys(doc.get("payloadkeys")),
            "resp": keys(doc.get("responsekeys")),
        }
    table["device_queries"] = device_queries(src)
    for name, doc in yaml_docs(src, "checkin"):
        mt = None
        for k in doc.get("payloadkeys") or []:
            if k["key"] == "MessageType":
                rl = k.get("rangelist") or []
                mt = rl[0] if rl else None
        if not mt:
            mt = doc.get("payload", {}).get("requesttype") or os.path.splitext(name)[0]
        table["checkin"][mt] = {"file": name, "keys": keys(doc.get("payloadkeys"))}
    for name, doc in yaml_docs(src, "profiles"):
        payload = doc.get("payload", {})
        pt = payload.get("payloadtype")
        if not pt:
            continue
        ks = keys(doc.get("payloadkeys"))
        if pt == "TopLevel":
            table["profile_top"] = ks
            continue
        if pt == "CommonPayloadKeys":
            table["profile_common"] = ks
            continue
        ios = payload.get("supportedOS", {}).get("iOS", {})
        entry = table["profiles"].get(pt)
        if entry is None:
            table["profiles"][pt] = {
                "file": name,
                "ios": ios.get("introduced", "n/a") != "n/a",
                "ue_forbidden": (ios.get("userenrollment") or {}).get("mode") == "forbidden",
                "multiple": bool(ios.get("multiple", True)),
                "supervised": ios_supervised(payload.get("supportedOS")),
                "keys": ks,
            }
        else:
            # Several files describe one payload type (com.apple.MCX …): union of their keys.
            have = {k["n"] for k in entry["keys"]}
            entry["keys"].extend(k for k in ks if k["n"] not in have)
            entry["ios"] = entry["ios"] or ios.get("introduced", "n/a") != "n/a"
            # Supervised-only when every file describing it says so.
            entry["supervised"] = entry["supervised"] and ios_supervised(payload.get("supportedOS"))
    with open(dst, "w") as f:
        json.dump(table, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {dst}: {len(table['commands'])} commands, {len(table['checkin'])} check-in messages, {len(table['profiles'])} payload types")
    declarative(src, os.path.join(os.path.dirname(dst), "declarative.json"))


def device_queries(src):
    """DeviceInformation's query names with what iOS says of each: `net`, a
    network query (access right AllowQueryNetworkInformation); `dev`, a
    device-information query (AllowQueryDeviceInformation); `ue`, refused by
    a User Enrollment; `dep`, the iOS version that deprecated it. Only those
    iOS has."""
    with open(os.path.join(src, "mdm", "commands", "information.device.yaml")) as f:
        doc = yaml.safe_load(f)
    queries = next(k for k in doc["payloadkeys"] if k["key"] == "Queries")
    names = queries["subkeys"][0].get("subkeys") or []
    out = []
    for q in names:
        ios = (q.get("supportedOS") or {}).get("iOS") or {}
        if ios.get("introduced") == "n/a":
            continue
        e = {"n": q["key"]}
        if ios.get("accessrights") == "AllowQueryNetworkInformation":
            e["net"] = 1
        if ios.get("accessrights") == "AllowQueryDeviceInformation":
            e["dev"] = 1
        if (ios.get("userenrollment") or {}).get("mode") == "forbidden":
            e["ue"] = 1
        if ios.get("deprecated"):
            e["dep"] = str(ios["deprecated"])
        out.append(e)
    return out


def declarative(src, dst):
    """Declarations (by Type: kind, iOS support, payload key tree) and status
    items (by name: value key tree) from src/declarative, to `dst`."""
    base = os.path.join(src, "declarative")
    out = {"declarations": {}, "status_items": {}}
    ddir = os.path.join(base, "declarations")
    for kind in sorted(os.listdir(ddir)):
        kdir = os.path.join(ddir, kind)
        if not os.path.isdir(kdir):
            continue
        for root, _, files in os.walk(kdir):
            for name in sorted(files):
                if not name.endswith(".yaml"):
                    continue
                with open(os.path.join(root, name)) as f:
                    doc = yaml.safe_load(f)
                payload = doc.get("payload", {})
                t = payload.get("declarationtype")
                if not t:
                    continue
                ios = payload.get("supportedOS", {}).get("iOS", {})
                out["declarations"][t] = {
                    "file": os.path.relpath(os.path.join(root, name), ddir),
                    "kind": kind.rstrip("s"),
                    "ios": ios.get("introduced", "n/a") != "n/a",
                    "keys": keys(doc.get("payloadkeys"), flags=False),
                }
    sdir = os.path.join(base, "status")
    for name in sorted(os.listdir(sdir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(sdir, name)) as f:
            doc = yaml.safe_load(f)
        item = doc.get("payload", {}).get("statusitemtype")
        if item:
            out["status_items"][item] = {"file": name, "keys": keys(doc.get("payloadkeys"), flags=False)}
    with open(dst, "w") as f:
        json.dump(out, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {dst}: {len(out['declarations'])} declaration types, {len(out['status_items'])} status items")


if __name__ == "__main__":
    main()
