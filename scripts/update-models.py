"""Refreshes the vendored service models from the installed botocore."""
import gzip
import json
import os

import botocore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each service crate owns its model.
CRATE = {"kinesis": "kinesis", "dynamodb": "dynamo", "sts": "sts", "s3": "objects"}
# Services vendored only for the operations Ripstream serves (the rest of the
# model would be routed and validated as if it were served).
SERVED = {"sts": ["GetCallerIdentity"]}
# S3 is kept whole, so an unserved operation is routed to itself (and answered
# NotImplemented) rather than to a served one of the same path. botocore's
# model no longer names the XML root elements of S3's replies (botocore does
# not read them); the Smithy SDKs check them, so they are put back.
S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
S3_ROOTS = {
    "ListBuckets": "ListAllMyBucketsResult",
    "ListObjectsV2": "ListBucketResult",
    "ListObjects": "ListBucketResult",
    "DeleteObjects": "DeleteResult",
    "CreateMultipartUpload": "InitiateMultipartUploadResult",
    "CompleteMultipartUpload": "CompleteMultipartUploadResult",
    "ListParts": "ListPartsResult",
    "ListMultipartUploads": "ListMultipartUploadsResult",
}


def s3_roots(model):
    for op, root in S3_ROOTS.items():
        shape = model["shapes"][model["operations"][op]["output"]["shape"]]
        shape["locationName"] = root
        shape["xmlNamespace"] = {"uri": S3_NAMESPACE}
    model["metadata"]["xmlNamespace"] = S3_NAMESPACE
    return model


def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in ("documentation", "documentationUrl", "examples")}
    if isinstance(o, list):
        return [strip(x) for x in o]
    return o


def trim(model, operations):
    """Keeps `operations` and the shapes they reach (members, errors)."""
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
    model["shapes"] = {k: v for k, v in model["shapes"].items() if k in keep}
    return model


MODELS = [("kinesis", "2013-12-02"), ("dynamodb", "2012-08-10"), ("sts", "2011-06-15"), ("s3", "2006-03-01")]
for service, version in MODELS:
    src = os.path.join(os.path.dirname(botocore.__file__), "data", service, version, "service-2.json.gz")
    with gzip.open(src) as f:
        model = strip(json.load(f))
    if service in SERVED:
        model = trim(model, SERVED[service])
    if service == "s3":
        model = s3_roots(model)
    out = os.path.join(ROOT, "crates", CRATE[service], "model", f"{service}-{version}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(model, f, indent=1)
    print(service, version, "from botocore", botocore.__version__)
