"""Refreshes the vendored service models from the installed botocore."""
import gzip
import json
import os

import botocore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each service crate owns its model.
CRATE = {"kinesis": "kinesis", "dynamodb": "dynamo"}


def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in ("documentation", "documentationUrl", "examples")}
    if isinstance(o, list):
        return [strip(x) for x in o]
    return o


for service, version in [("kinesis", "2013-12-02"), ("dynamodb", "2012-08-10")]:
    src = os.path.join(os.path.dirname(botocore.__file__), "data", service, version, "service-2.json.gz")
    with gzip.open(src) as f:
        model = strip(json.load(f))
    with open(os.path.join(ROOT, "crates", CRATE[service], "model", f"{service}-{version}.json"), "w") as f:
        json.dump(model, f, indent=1)
    print(service, version, "from botocore", botocore.__version__)
