"""``dynzoo list`` (``--features``: feature levels) and ``dynzoo profile``."""

from __future__ import annotations

import argparse


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("list")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'micronet_*'")
    p.add_argument(
        "--features",
        action="store_true",
        help="a markdown table of each model's feature levels (channels at strides 2 to 32), the "
        "maps create_model(..., include_top=False, feature_levels=...) returns; builds each model",
    )
    p.set_defaults(func=_list)

    p = subparsers.add_parser(
        "profile",
        description="Parameters and MAdds per layer, counted as the papers count them. With several "
        "models (names or patterns) and --compare, one row per model next to the papers' and the "
        "official code's figures.",
    )
    p.add_argument("models", nargs="+", help="model names or shell-style patterns")
    p.add_argument("--input-size", type=int, default=224, help="square input size (default 224)")
    p.add_argument("--compare", action="store_true", help="print a markdown table: ours vs paper vs official code")
    p.set_defaults(func=_profile)


def _list(args: argparse.Namespace) -> int:
    from dynzoo.registry import get_entry, list_models

    if args.features:
        from dynzoo.applications import feature_levels, feature_levels_table

        names = list_models(args.pattern)
        if not names:
            raise ValueError(f"no registered model matches {args.pattern!r}.")
        print(
            feature_levels_table(
                {name: {level: info["channels"] for level, info in feature_levels(name).items()} for name in names}
            )
        )
        return 0
    for name in list_models(args.pattern):
        entry = get_entry(name)
        tags = ", ".join(entry.pretrained) or "-"
        print(f"{name:28s} weights: {tags:16s} {entry.description}")
    return 0


def _expand(patterns: list[str]) -> list[str]:
    from dynzoo.registry import get_entry, list_models

    names: list[str] = []
    for pattern in patterns:
        matched = list_models(pattern) if any(c in pattern for c in "*?[") else [get_entry(pattern).name]
        if not matched:
            raise ValueError(f"no registered model matches {pattern!r}.")
        names += [n for n in matched if n not in names]
    return names


def _profile(args: argparse.Namespace) -> int:
    from dynzoo.profile import compare_table, profile
    from dynzoo.registry import create_model

    if args.input_size < 32:
        raise ValueError(f"--input-size must be at least 32, got {args.input_size}.")
    size = args.input_size
    names = _expand(args.models)
    profiles = [profile(create_model(name, input_shape=(size, size, 3), include_preprocessing=False)) for name in names]
    if args.compare:
        print(compare_table(profiles))
    else:
        print("\n\n".join(p.table() for p in profiles))
    return 0
