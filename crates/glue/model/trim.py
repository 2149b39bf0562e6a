"""Vendors botocore's Glue model trimmed to the operations Ripstream serves.

Run with botocore installed: `python3 crates/glue/model/trim.py`. The output,
`glue-2017-03-31.json`, keeps the metadata (the front door reads the protocol,
target prefix and signing name from it), the served operations and every
shape they reach, without documentation strings. Only served operations are
kept because the front door routes and validates every operation the model
has.
"""
import gzip
import json
import os

import botocore

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "2017-03-31"
SERVED = [
    "CreateDatabase",
    "GetDatabase",
    "GetDatabases",
    "UpdateDatabase",
    "DeleteDatabase",
    "CreateTable",
    "GetTable",
    "GetTables",
    "UpdateTable",
    "DeleteTable",
    "BatchDeleteTable",
    "GetTableVersion",
    "GetTableVersions",
    "DeleteTableVersion",
]


def strip(o):
    if isinstance(o, dict):
        return {
            k: strip(v)
            for k, v in o.items()
            if k not in ("documentation", "documentationUrl", "examples")
        }
    if isinstance(o, list):
        return [strip(x) for x in o]
    return o


def trim(model, operations):
    """Keeps `operations` and the shapes they reach (members, errors)."""
    missing = [op for op in operations if op not in model["operations"]]
    if missing:
        raise SystemExit(f"botocore's model lacks {missing}")
    model["operations"] = {k: v for k, v in model["operations"].items() if k in operations}
    keep, todo = set(), []
    for op in model["operations"].values():
        todo += [op[k]["shape"] for k in ("input", "output") if k in op]
        todo += [e["shape"] for e in op.get("errors", [])]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        shape = model["shapes"][name]
        todo += [m["shape"] for m in shape.get("members", {}).values()]
        todo += [shape[k]["shape"] for k in ("member", "key", "value") if k in shape]
    model["shapes"] = {k: v for k, v in sorted(model["shapes"].items()) if k in keep}
    return model


def main():
    base = os.path.join(os.path.dirname(botocore.__file__), "data", "glue", VERSION)
    plain = os.path.join(base, "service-2.json")
    if os.path.exists(plain):
        with open(plain) as f:
            model = json.load(f)
    else:
        with gzip.open(plain + ".gz") as f:
            model = json.load(f)
    model = trim(strip(model), SERVED)
    out = os.path.join(HERE, f"glue-{VERSION}.json")
    with open(out, "w") as f:
        json.dump(model, f, indent=1)
        f.write("\n")
    print("glue", VERSION, "from botocore", botocore.__version__, "->", out)


if __name__ == "__main__":
    main()
