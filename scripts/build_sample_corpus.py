"""Build loadgen/data/sample-docs.jsonl.gz: real documents of mixed length from CPython's docs.

Sources: the reference-manual topics shipped in ``pydoc_data`` (long: up to thousands of tokens),
module docstrings (medium) and function/class docstrings (short). Run once; the output is committed
so every machine publishes the same corpus.
"""

import gzip
import importlib
import inspect
import json
import random
import sys
import warnings

MODULES = sorted(
    m
    for m in sys.stdlib_module_names
    if not m.startswith("_")
    and m not in {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}
)


def docs():
    from pydoc_data.topics import topics

    for name, text in sorted(topics.items()):
        yield {"id": f"topic/{name}", "text": text.strip(), "metadata": {"source": "pydoc-topic"}}
    for mod_name in MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(mod_name)
        except Exception:
            continue
        if mod.__doc__ and mod.__doc__.strip():
            yield {
                "id": f"module/{mod_name}",
                "text": mod.__doc__.strip(),
                "metadata": {"source": "module-docstring"},
            }
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != mod_name:
                continue
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
            if doc and len(doc) > 10:
                yield {
                    "id": f"api/{mod_name}.{attr}",
                    "text": doc,
                    "metadata": {"source": "api-docstring"},
                }
            if inspect.isclass(obj):
                for meth_name, meth in sorted(vars(obj).items()):
                    meth_doc = (
                        inspect.getdoc(meth)
                        if inspect.isfunction(meth) and not meth_name.startswith("_")
                        else None
                    )
                    if meth_doc and len(meth_doc) > 10:
                        yield {
                            "id": f"api/{mod_name}.{attr}.{meth_name}",
                            "text": meth_doc,
                            "metadata": {"source": "api-docstring"},
                        }


def main(out="loadgen/data/sample-docs.jsonl.gz", total=2000):
    all_docs = list(docs())
    fixed = [d for d in all_docs if not d["id"].startswith("api/")]
    rng = random.Random(7)
    api = [d for d in all_docs if d["id"].startswith("api/")]
    rng.shuffle(api)
    chosen = fixed + api[: max(0, total - len(fixed))]
    rng.shuffle(chosen)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        for d in chosen[:total]:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    print(f"{min(total, len(chosen))} documents from {len(all_docs)} candidates written to {out}")


if __name__ == "__main__":
    main()
