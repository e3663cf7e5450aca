"""Regenerate the tables of the documentation from their sources of truth.

A generated table sits between two markers in README.md or a page of docs/::

    <!-- generated:NAME -->
    | ... the table ... |
    <!-- /generated:NAME -->

NAME is a table kind, optionally with an argument after a colon (``quantization_accuracy:micronet_m0``).
The kinds and their sources:

- ``models``: every registered model (``dynzoo.list_models``, ``dynzoo.registry.get_entry``): family,
  description, the paper's figures from ``entry.reference`` and the pretrained tags. Reads the registry's
  metadata only; no model is built.
- ``weights``: the weight manifest, ``dynzoo.config.load_config("weights")``.
- ``deploy_latency`` and ``deploy_latency_ablations``: ``benchmarks/results/deploy_latency.json``.
- ``quantization_accuracy:MODEL``: ``benchmarks/results/quantization_accuracy.json``.
- ``drnet_latency``: ``benchmarks/results/drnet_latency.json``.
- ``ddw_memory``: ``benchmarks/results/ddw_memory.json`` and the graph sizes in ``ddw_sizes.json``.

Usage, from the repository root::

    python tools/docs_tables.py          # rewrite every stale table in place
    python tools/docs_tables.py --check  # rewrite nothing; exit 1 naming each stale table
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REGENERATE = "python tools/docs_tables.py"

BLOCK = re.compile(
    r"(?P<open><!-- generated:(?P<name>[\w:.-]+) -->\n)(?P<body>.*?)(?P<close><!-- /generated:(?P=name) -->)",
    re.DOTALL,
)
MARKER = re.compile(r"<!-- /?generated:([\w:.-]+) -->")

# The docs page of each registry family (paths from the repository root).
FAMILY_PAGES = {
    "micronet": "docs/models/micronet.md",
    "mobilenetv2": "docs/models/dynamic_conv.md",
    "resnet": "docs/models/dynamic_conv.md",
    "drnet": "docs/models/drnet.md",
    "cdb": "docs/models/cdb.md",
    "drt": "docs/models/drt_covnorm.md",
    "ddw": "docs/models/ddw.md",
    "ddn": "docs/models/ddn.md",
}


def default_documents(root: Path) -> list[Path]:
    """README.md and every markdown page under docs/ (docs/models/ included)."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], align: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _number(value: Any, fmt: str = "g") -> str:
    return "–" if value is None else format(value, fmt)


def _link(root: Path, document: Path, target: str) -> str:
    """``target`` (a path from the repository root) relative to the folder of ``document``."""
    return Path(os.path.relpath(root / target, document.resolve().parent)).as_posix()


def _results(root: Path, name: str) -> Any:
    return json.loads((root / "benchmarks" / "results" / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- tables


def table_models(root: Path, document: Path, argument: str | None) -> str:
    """Every registered model: family (linked to its page), description, paper figures, pretrained tags."""
    import dynzoo
    from dynzoo.registry import get_entry

    rows = []
    for name in dynzoo.list_models():
        entry = get_entry(name)
        page = FAMILY_PAGES.get(entry.family)
        family = f"[{entry.family}]({_link(root, document, page)})" if page else entry.family
        ref = entry.reference
        tags = ", ".join(f"`{t}`" for t in entry.pretrained) or "–"
        rows.append(
            (
                f"`{name}`",
                family,
                entry.description,
                _number(ref.get("paper_params_m")),
                _number(ref.get("paper_madds_m")),
                _number(ref.get("paper_top1")),
                tags,
            )
        )
    header = ("model", "family", "description", "paper params (M)", "paper MAdds (M)", "paper top-1", "weights")
    return _table(header, ("---", "---", "---", "---:", "---:", "---:", "---"), rows)


def table_weights(root: Path, document: Path, argument: str | None) -> str:
    """The weight manifest: model, tag, where the file comes from, the reported top-1, the licence."""
    from dynzoo.config import load_config

    manifest = load_config("weights")
    sources = manifest.get("sources", {})
    rows = []
    for model, tags in manifest["weights"].items():
        for tag, entry in tags.items():
            fields = {**sources.get(entry.get("source"), {}), **entry}
            authors = "authors' " if str(entry.get("source", "")).endswith("_official") else ""
            if fields.get("manual_download"):
                where = f"{authors}checkpoint, [manual download]({fields['manual_download']['page']})"
            elif fields.get("urls"):
                where = f"{authors}[`{fields.get('file_name') or model}`]({fields['urls'][0]})"
            else:
                where = f"{authors}`{fields.get('file_name')}`"
            licence = str(fields.get("licence") or "–").split(" (")[0]
            rows.append((f"`{model}`", f"`{tag}`", where, _number(fields.get("top1")), licence))
    header = ("model", "weights", "source", "ImageNet top-1 (reported)", "licence")
    return _table(header, ("---",) * 5, rows)


def table_deploy_latency(root: Path, document: Path, argument: str | None) -> str:
    """The export optimizer's float32 and int8 latencies, against MobileNetV3-Small."""
    data = _results(root, "deploy_latency.json")
    rows = []
    for name, r in data["models"].items():
        low, high = r["int8_over_float32_p10_p90"]
        rows.append(
            (
                name,
                f"{r['float32_ms']:.2f}",
                f"{r['int8_ms']:.2f}",
                f"{r['int8_over_float32']:.2f}× ({low:.2f}–{high:.2f})",
                f"{r['float32_over_reference']:.2f}×",
                f"{r['int8_over_reference_int8']:.2f}×",
                f"{r['ops'][0]}, {r['ops'][1]}",
                f"{r['partitions'][0]}, {r['partitions'][1]}",
            )
        )
    header = (
        "model",
        "float32 ms",
        "int8 ms",
        "int8 / float32 (p10–p90 of the cycles)",
        "float32 / MNV3-S float32",
        "int8 / MNV3-S int8",
        "TFLite ops (float32, int8)",
        "XNNPACK partitions (float32, int8)",
    )
    return _table(header, ("---", "---:", "---:", "---:", "---:", "---:", "---", "---"), rows)


def table_deploy_latency_ablations(root: Path, document: Path, argument: str | None) -> str:
    """Each rewrite of the export optimizer undone on its own."""
    data = _results(root, "deploy_latency.json")
    rows = []
    for key, a in data["ablations"].items():
        head, label = key.split(", ", 1)
        model, mode = head.rsplit(" ", 1)
        rows.append((model, mode, label, f"{a['ms']:.2f}", f"{a['ratio']:.2f}×", a["ops"], a["partitions"]))
    header = ("model", "mode", "export", "ms", "ratio to shipped", "TFLite ops", "XNNPACK partitions")
    return _table(header, ("---", "---", "---", "---:", "---:", "---:", "---:"), rows)


def table_quantization_accuracy(root: Path, document: Path, argument: str | None) -> str:
    """One network's accuracy, size and latency in every export mode."""
    if not argument:
        raise ValueError("quantization_accuracy needs the model: <!-- generated:quantization_accuracy:MODEL -->")
    modes = _results(root, "quantization_accuracy.json")[argument]["modes"]
    rows = []
    for mode, m in modes.items():
        keras_top1, tflite_top1 = 100 * m["keras_accuracy"], 100 * m["tflite_accuracy"]
        rows.append(
            (
                mode,
                f"{keras_top1:.1f}",
                f"{tflite_top1:.1f}",
                f"{round(tflite_top1, 1) - round(keras_top1, 1):+.1f}",
                f"{100 * m['top1_agreement']:.1f}%",
                f"{m['size_bytes'] / 1024:.0f}",
                f"{m['latency_ms']:.3f}",
            )
        )
    header = ("mode", "Keras top-1", "TFLite top-1", "Δ (points)", "agreement", "size (KiB)", "latency (ms)")
    return _table(header, ("---",) * 7, rows)


def table_drnet_latency(root: Path, document: Path, argument: str | None) -> str:
    """DRNet's batch-1 latency against the network without conditionals, per routing threshold."""
    rows = [
        (r["model"], r["setting"].removeprefix("T = "), f"{r['madds_ratio']:.2f}", f"{r['latency_ratio']:.2f}")
        for r in _results(root, "drnet_latency.json")
    ]
    return _table(("model", "T", "MAdds ratio", "latency ratio"), ("---",) * 4, rows)


def table_ddw_memory(root: Path, document: Path, argument: str | None) -> str:
    """Peak training-step memory of DDW's three aggregation forms."""
    edges = {s["model"]: ", ".join(str(g[2]) for g in s["graphs"]) for s in _results(root, "ddw_sizes.json")}
    peaks: dict[str, dict[str, float]] = {}
    for r in _results(root, "ddw_memory.json")["rows"]:
        peaks.setdefault(r["model"], {})[r["form"]] = r["step_peak_bytes"] / 2**20
    rows = []
    for model, p in peaks.items():
        network = "ResNet-" + model.removeprefix("ddw_resnet") if model.startswith("ddw_resnet") else model
        rows.append(
            (
                f"{network} ({edges.get(model, '?')})",
                f"{p['adjacency']:.1f} MiB",
                f"{p['stacked']:.1f} MiB",
                f"{p['adjacency'] / p['stacked']:.2f}",
                f"{p['edges']:.1f} MiB",
            )
        )
    header = ("network (graph edges)", "adjacency form", "naive (stacked) form", "ratio", "per-edge autodiff")
    return _table(header, ("---",) * 5, rows)


TABLES: dict[str, Callable[[Path, Path, str | None], str]] = {
    "models": table_models,
    "weights": table_weights,
    "deploy_latency": table_deploy_latency,
    "deploy_latency_ablations": table_deploy_latency_ablations,
    "quantization_accuracy": table_quantization_accuracy,
    "drnet_latency": table_drnet_latency,
    "ddw_memory": table_ddw_memory,
}


# ------------------------------------------------------------------------------------------- rewriting


def generate(name: str, document: Path, root: Path = REPO) -> str:
    """The current content of the table ``name`` (``KIND`` or ``KIND:ARGUMENT``) as placed in ``document``."""
    kind, _, argument = name.partition(":")
    if kind not in TABLES:
        raise ValueError(f"{document}: unknown generated table {name!r}; known: {', '.join(sorted(TABLES))}.")
    return TABLES[kind](root, document, argument or None)


def render(text: str, document: Path, root: Path = REPO) -> str:
    """``text`` with every generated block's content regenerated.

    Raises:
        ValueError: an opening marker without its closing marker (or the reverse), or an unknown table.
    """
    paired = {m.group("name") for m in BLOCK.finditer(text)}
    for marker in MARKER.finditer(text):
        if marker.group(1) not in paired:
            raise ValueError(f"{document}: marker {marker.group(0)} has no partner.")

    def replace(match: re.Match[str]) -> str:
        table = generate(match.group("name"), document, root)
        return f"{match.group('open')}{table}{match.group('close')}"

    return BLOCK.sub(replace, text)


def stale_tables(document: Path, root: Path = REPO) -> list[str]:
    """The names of the generated tables in ``document`` whose content is not what ``render`` writes."""
    text = document.read_text(encoding="utf-8")
    current = {m.group("name"): m.group("body") for m in BLOCK.finditer(render(text, document, root))}
    return [m.group("name") for m in BLOCK.finditer(text) if m.group("body") != current[m.group("name")]]


def check(documents: Iterable[Path], root: Path = REPO) -> list[str]:
    """``PATH: table NAME`` for every stale table of ``documents``; nothing is written."""
    return [f"{document}: table {name!r}" for document in documents for name in stale_tables(document, root)]


def rewrite(documents: Iterable[Path], root: Path = REPO) -> list[Path]:
    """Regenerate the tables of ``documents`` in place; returns the files that changed."""
    changed = []
    for document in documents:
        text = document.read_text(encoding="utf-8")
        new = render(text, document, root)
        if new != text:
            document.write_text(new, encoding="utf-8")
            changed.append(document)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a table is stale")
    parser.add_argument("--root", type=Path, default=REPO, help="the repository (default: this script's)")
    parser.add_argument("documents", nargs="*", type=Path, help="markdown files (default: README.md, docs/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # importing dynzoo imports TensorFlow: keep its log quiet
    root = args.root.resolve()
    documents = args.documents or default_documents(root)
    if args.check:
        stale = check(documents, root)
        for line in stale:
            print(f"stale generated {line}", file=sys.stderr)
        if stale:
            print(f"Regenerate with: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{len(documents)} documents checked: every generated table is current.")
        return 0
    for document in rewrite(documents, root):
        print(f"rewrote {document}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
