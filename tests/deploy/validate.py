"""Validates synapsor's deployment files against published schemas.

  validate.py compose SCHEMA FILE     the Compose Specification JSON schema
  validate.py k8s VERSION FILE...     every manifest, strictly, against the Kubernetes OpenAPI
                                      schemas of VERSION (kubernetes-validate); kustomization
                                      files are skipped (they are not API objects)

Exits 1 naming the file and the problem.
"""
import json
import sys

import yaml


def compose(schema_path, path):
    import jsonschema

    with open(schema_path) as f:
        schema = json.load(f)
    with open(path) as f:
        doc = yaml.safe_load(f)
    jsonschema.validate(doc, schema)
    print(f"{path}: valid against the Compose Specification schema")


def k8s(version, paths):
    import kubernetes_validate

    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            if doc.get("apiVersion", "").startswith("kustomize.config.k8s.io"):
                continue
            kubernetes_validate.validate(doc, version, strict=True)
            print(f"{path}: {doc['kind']} {doc['metadata']['name']} valid for Kubernetes {version}")


def main():
    try:
        if sys.argv[1] == "compose":
            compose(sys.argv[2], sys.argv[3])
        elif sys.argv[1] == "k8s":
            k8s(sys.argv[2], sys.argv[3:])
        else:
            raise SystemExit(__doc__)
    except Exception as e:  # the message names what failed
        print(f"invalid: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


main()
