"""``dynzoo weights list | download | convert | publish | pin``."""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
from pathlib import Path


def add_commands(subparsers) -> None:
    weights = subparsers.add_parser(
        "weights",
        description="Pretrained weights of the manifest (zoo_configs/weights.json, plus the user manifest "
        "$DYNZOO_HOME/weights.json). Downloads are hash-checked and cached under $DYNZOO_HOME; "
        "DYNZOO_MIRRORS lists base URLs tried first, DYNZOO_OFFLINE=1 uses the cache only, "
        "DYNZOO_STRICT_HASHES=1 refuses files without a pinned sha256; files without one are downloaded over "
        "plain http only with --allow-unpinned (or DYNZOO_ALLOW_UNPINNED=1), and their first sha256 is "
        "recorded.",
    )
    sub = weights.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="the table of available weights")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style model filter, e.g. 'micronet_*'")
    p.set_defaults(func=_list)

    p = sub.add_parser("download", help="download (and verify, cache) weights: NAME[:TAG], tag default imagenet")
    p.add_argument("names", nargs="+", metavar="NAME[:TAG]")
    p.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="download files without a pinned sha256 over plain http too: anyone on the network "
        "path could swap them. Their sha256 is recorded, and a changed file is refused later.",
    )
    p.set_defaults(func=_download)

    p = sub.add_parser("convert", help="convert an official PyTorch checkpoint into a .weights.h5")
    p.add_argument("source", help="official checkpoint (.pth, .pth.tar)")
    p.add_argument("--model", required=True, help="registered model name, e.g. micronet_m0")
    p.add_argument("--out", required=True, help="output FILE.weights.h5")
    p.add_argument("--no-top", action="store_true", help="convert the feature extractor only (no classifier)")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "publish",
        help="publish a trained MODEL.keras: its .weights.h5, sha256 and manifest entry",
        description="Write MODEL.keras's weights as MODEL-TAG-SHA.weights.h5, put the file in the local "
        "cache (weights=TAG then works here at once) and add the entry, with its sha256 and size, to a "
        "manifest. Upload the file to the --url locations for others.",
    )
    p.add_argument("model_file", metavar="MODEL.keras")
    p.add_argument("--tag", required=True, help="weight tag, e.g. digits (letters, digits, _ and -)")
    p.add_argument("--model", default=None, help="registered model name (default: the model's own name)")
    p.add_argument("--out-dir", default=".", help="where to write the .weights.h5 (default: .)")
    p.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="BASE_URL",
        help="base URL the file will be served from (repeatable: mirrors)",
    )
    p.add_argument(
        "--manifest",
        default=None,
        help="manifest to add the entry to (default: the user manifest $DYNZOO_HOME/weights.json)",
    )
    p.add_argument("--licence", default=None, help="licence of the weights")
    p.add_argument("--top1", type=float, default=None, help="top-1 accuracy (%%) you measured")
    p.add_argument("--notes", default=None, help="free text: dataset, recipe, command that measured top-1")
    p.set_defaults(func=_publish)

    p = sub.add_parser("pin", help="pin the sha256 of weights you verified (user manifest)")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("sha256")
    p.set_defaults(func=_pin)


def _clean_errors(func):
    """Download failures become the CLI's one-line errors."""

    @functools.wraps(func)
    def wrapper(args):
        from dynzoo.weights import DownloadError

        try:
            return func(args)
        except DownloadError as e:
            raise ValueError(str(e)) from None

    return wrapper


def _list(args: argparse.Namespace) -> int:
    from dynzoo.weights import list_weights
    from dynzoo.weights.download import dynzoo_home

    entries = list_weights(args.pattern)
    if not entries:
        raise ValueError(f"no weights match {args.pattern!r}.")
    print("| weights | format | top-1 | sha256 | download | cached | licence |")
    print("|---|---|---|---|---|---|---|")
    for e in entries:
        cached = bool(e.file_name) and (dynzoo_home() / "downloads" / e.file_name).is_file()
        download = "manual" if not e.urls and e.manual_download else (e.urls[0] if e.urls else "—")
        top1 = f"{e.top1:.1f}" if e.top1 is not None else "—"
        licence = (e.licence or "—").split(" (")[0]
        print(
            f"| {e.name} | {e.format} | {top1} | {e.sha256[:12] if e.sha256 else 'not pinned'} | "
            f"{download} | {'yes' if cached else 'no'} | {licence} |"
        )
    return 0


@_clean_errors
def _download(args: argparse.Namespace) -> int:
    from dynzoo.weights import pretrained_file, sha256_file
    from dynzoo.weights.manifest import parse_name

    for name in args.names:
        path = pretrained_file(*parse_name(name), allow_unpinned=args.allow_unpinned)
        print(f"{name}: {path} sha256={sha256_file(path)}")
    return 0


def _check_h5_name(out: str, option: str) -> None:
    if not out.endswith(".weights.h5"):
        raise ValueError(f"{option} must end with .weights.h5, got {out!r}.")


def _convert(args: argparse.Namespace) -> int:
    from dynzoo.registry import create_model
    from dynzoo.weights import save_weights_atomic, sha256_file

    _check_h5_name(args.out, "--out")
    if not args.source.endswith((".pth", ".pth.tar", ".pt", ".tar")):
        raise ValueError(f"SRC must be an official PyTorch checkpoint (.pth, .pth.tar), got {args.source!r}.")
    model = create_model(args.model, weights=args.source, include_top=not args.no_top)
    out = save_weights_atomic(model, args.out)
    print(f"{out} sha256={sha256_file(out)} ({model.count_params():,} parameters)")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from dynzoo.models.common import is_weight_tag
    from dynzoo.registry import get_entry, load_model
    from dynzoo.weights import save_weights_atomic, sha256_file
    from dynzoo.weights.download import cache_dir
    from dynzoo.weights.manifest import update_manifest, user_manifest_path

    if not is_weight_tag(args.tag):
        raise ValueError(f"--tag must be a plain name (letters, digits, _ and -), got {args.tag!r}.")
    if not args.model_file.endswith(".keras"):
        raise ValueError(f"MODEL.keras: expected a .keras file, got {args.model_file!r}.")
    model = load_model(args.model_file)
    model_name = get_entry(args.model or model.name).name

    out_dir = Path(args.out_dir)
    staged = save_weights_atomic(model, out_dir / f".{model_name}-{args.tag}.staged.weights.h5")
    sha256 = sha256_file(staged)
    file_name = f"{model_name}-{args.tag}-{sha256[:8]}.weights.h5"
    published = out_dir / file_name
    os.replace(staged, published)
    # the local cache gets the same bytes, so weights=TAG loads here without any server
    fd, tmp = tempfile.mkstemp(dir=cache_dir("downloads"), prefix=f".{file_name}.", suffix=".part")
    os.close(fd)
    shutil.copyfile(published, tmp)
    os.replace(tmp, cache_dir("downloads") / file_name)

    height, width, channels = (d or 224 for d in model.input_shape[1:])
    classes = model.output_shape[-1] if len(model.output_shape) == 2 else None
    fields = {
        "format": "keras_weights_h5",
        "file_name": file_name,
        "urls": [f"{u.rstrip('/')}/{file_name}" for u in args.url],
        "sha256": sha256,
        "size": published.stat().st_size,
        "input_size": [height, width, channels],
        "num_classes": classes,
        "licence": args.licence,
        "top1": args.top1,
        "notes": args.notes,
    }
    manifest = update_manifest(args.manifest or user_manifest_path(), model_name, args.tag, fields)
    print(f"{published} sha256={sha256}")
    print(f"manifest entry {model_name}:{args.tag} written to {manifest}")
    if not args.url:
        print("no --url given: the weights load on this machine only; upload the file and add its URL.")
    return 0


def _pin(args: argparse.Namespace) -> int:
    import re

    from dynzoo.weights import get_weights
    from dynzoo.weights.manifest import parse_name, update_manifest, user_manifest_path

    model, tag = parse_name(args.name)
    get_weights(model, tag)  # must exist
    sha256 = args.sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"SHA256 must be 64 hex digits, got {args.sha256!r}.")
    path = update_manifest(user_manifest_path(), model, tag, {"sha256": sha256})
    print(f"pinned {model}:{tag} sha256={sha256} in {path}")
    return 0
