"""``dynzoo export`` and ``dynzoo bench``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_CALIBRATION = 128


def add_commands(subparsers) -> None:
    from dynzoo.export.tflite import MODES

    p = subparsers.add_parser(
        "export",
        description="Convert a registered model (or a saved .keras model) to TFLite with builtin ops only. "
        "Fails, naming the op and its layer, if an op would need Flex or stay float in an integer mode. "
        "Writes <output>/<name>_<mode>.tflite, an op-count report and, with --verify, a parity report; "
        "with --bundle, a deployable bundle folder per mode.",
    )
    p.add_argument("model", help="registered model name, or the path of a .keras model")
    p.add_argument(
        "--mode", dest="modes", action="append", choices=MODES, help="export mode (repeatable; default float32)"
    )
    p.add_argument("--output", "-o", default="exported", help="output folder (default ./exported)")
    p.add_argument("--input-size", type=int, default=224, help="square input size of a registered model")
    p.add_argument("--classes", type=int, default=1000, help="classes of a registered model's top")
    p.add_argument("--weights", default=None, help="weights of a registered model (tag or path)")
    p.add_argument(
        "--preprocessing-in-model",
        action="store_true",
        help="the model normalises inside: an app feeds raw RGB (uint8 with --mode uint8)",
    )
    p.add_argument(
        "--calibration",
        default="digits",
        help="dataset for calibration (a name the training CLI reads; default digits)",
    )
    p.add_argument(
        "--calibration-size",
        type=int,
        default=DEFAULT_CALIBRATION,
        help=f"calibration images (default {DEFAULT_CALIBRATION})",
    )
    p.add_argument("--data-dir", default=None, help="data folder of the 'folder' or TFDS datasets")
    p.add_argument(
        "--verify",
        metavar="DATASET",
        default=None,
        help="parity report on the test split of DATASET: error, agreement, accuracy of both, "
        "per-layer error for int8/uint8/mixed",
    )
    p.add_argument("--verify-size", type=int, default=None, help="test images for --verify (default: all)")
    p.add_argument(
        "--float-layers",
        nargs="+",
        default=None,
        help="mode mixed: name fragments of the layers kept in float (default: the dynamic layers)",
    )
    p.add_argument(
        "--qat-epochs",
        type=int,
        default=0,
        help="quantization-aware training first: fine-tune with int8 fake quantization for this many "
        "epochs on the labelled training split of --calibration, then convert the fine-tuned network "
        "in every mode (default 0: off)",
    )
    p.add_argument("--qat-learning-rate", type=float, default=1e-4, help="Adam's rate for --qat-epochs (default 1e-4)")
    p.add_argument("--bundle", action="store_true", help="also write a bundle folder per mode")
    p.add_argument("--golden", action="store_true", help="with --bundle: also write the golden files")
    p.add_argument(
        "--domain-embedding",
        metavar="FILE",
        default=None,
        help="a domain-aware (DDN) model: bake it for each domain of FILE (domain_embeddings.json of "
        "'dynzoo train --task domains') into the static network; writes <name>_<domain>_<mode>.tflite",
    )
    p.add_argument(
        "--domain",
        dest="domains",
        action="append",
        default=None,
        help="with --domain-embedding: only this domain (repeatable; default every domain of FILE)",
    )
    p.set_defaults(func=_export)

    p = subparsers.add_parser(
        "bench",
        description="Export each model (and MobileNetV3-Small/-Large and MobileNetV2 from keras.applications, "
        "the same way) and time it with the LiteRT interpreter in a fresh subprocess per measurement: "
        "XNNPACK on/off, 1 and 2 threads, median and p90, peak memory. Writes JSON, a markdown table and "
        "a PNG plot of latency vs MAdds. With --profile, one model's latency op by op instead, each op "
        "mapped to its Keras layer and marked with whether XNNPACK takes it.",
    )
    p.add_argument(
        "models",
        nargs="*",
        default=[],
        help="model names or patterns (default micronet_*); with --profile one model name, .keras or .tflite file",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="per-op latency of one model instead: each op timed alone in a single-op model, mapped "
        "to its Keras layer, with whether XNNPACK takes it in the whole model; writes "
        "STEM_profile.md, STEM_profile.json and STEM_profile.png (a .tflite file is profiled as it "
        "is; a model name or .keras file is exported in --mode first)",
    )
    p.add_argument("--mode", dest="modes", action="append", choices=MODES, help="modes (default float32)")
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts (default 1 2; with --profile one, default 1)",
    )
    p.add_argument(
        "--xnnpack",
        choices=["on", "off", "both"],
        default=None,
        help="default both (with --profile: on or off, default on)",
    )
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--runs", type=int, default=100, help="timed runs per measurement (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all models per setting (default 3)")
    p.add_argument("--no-baselines", action="store_true", help="skip the keras.applications baselines")
    p.add_argument(
        "--preprocessing-in-model", action="store_true", help="export every model with its input normalisation inside"
    )
    p.add_argument("--calibration-size", type=int, default=32, help="calibration images (integer modes)")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="output path stem: STEM.json, STEM.md, STEM.png (default bench); with --profile "
        "STEM_profile.{md,json,png} (default <model>_<mode>)",
    )
    p.set_defaults(func=_bench)


def _check_positive(name: str, value: int) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")


def _export(args: argparse.Namespace) -> int:
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise ValueError(f"--output {args.output!r} is a file; the export writes a folder.")
    modes = args.modes or ["float32"]
    for name in ("--calibration-size", "--verify-size", "--input-size", "--classes"):
        _check_positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.golden and not args.bundle:
        raise ValueError("--golden needs --bundle.")
    if args.qat_epochs < 0:
        raise ValueError(f"--qat-epochs must be >= 0, got {args.qat_epochs}.")
    if not args.qat_learning_rate > 0:
        raise ValueError(f"--qat-learning-rate must be > 0, got {args.qat_learning_rate}.")
    if args.model.endswith(".keras"):
        from dynzoo.registry import load_model

        model = load_model(args.model, compile=True)
        source_name = Path(args.model).stem
        preprocessing_in_model = any(layer.name == "preprocessing" for layer in model.layers)
    else:
        from dynzoo.registry import create_model

        size = args.input_size
        model = create_model(
            args.model,
            input_shape=(size, size, 3),
            classes=args.classes,
            weights=args.weights,
            include_preprocessing=args.preprocessing_in_model,
        )
        source_name, preprocessing_in_model = args.model, args.preprocessing_in_model
    for name, static in _per_domain(model, source_name, args.domain_embedding, args.domains).items():
        _export_model(args, static, name, preprocessing_in_model, modes)
    return 0


def _per_domain(model, source_name: str, embedding_file: str | None, domains: list[str] | None) -> dict:
    """``{name: model}``: the model itself, or with --domain-embedding one baked static model per domain."""
    from dynzoo.models.ddn import is_domain_aware

    if embedding_file is None:
        if is_domain_aware(model):
            raise ValueError(
                f"{source_name} takes a domain embedding: give --domain-embedding FILE to bake it "
                "into a static network per domain."
            )
        if domains:
            raise ValueError("--domain needs --domain-embedding.")
        return {source_name: model}
    from dynzoo.layers.domain import DomainEmbeddings
    from dynzoo.models.bake import bake_domain

    if not is_domain_aware(model):
        raise ValueError(f"--domain-embedding: {source_name} is not a domain-aware (DDN) model.")
    table = DomainEmbeddings.load(embedding_file)
    return {f"{source_name}_{d}": bake_domain(model, table[d]) for d in domains or table.domains}


def _export_model(
    args: argparse.Namespace, model, source_name: str, preprocessing_in_model: bool, modes: list[str]
) -> None:
    from dynzoo.export import bundle, tflite, verify
    from dynzoo.models.common import IMAGENET_MEAN, IMAGENET_STD

    size = model.inputs[0].shape[1]
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    to_inputs = lambda images: verify.model_inputs(  # noqa: E731
        images, preprocessing_in_model=preprocessing_in_model, mean=mean, std=std
    )

    calibration = None
    if any(m in tflite.CALIBRATED_MODES for m in modes) or args.qat_epochs:
        # QAT trains on the whole split; calibration takes its first images either way
        limit = None if args.qat_epochs else args.calibration_size
        images, labels, _ = verify.load_images(args.calibration, "train", size, limit, args.data_dir)
        calibration = to_inputs(tflite.full_range_first(images[: args.calibration_size]))
    qat = None
    if args.qat_epochs:
        from dynzoo.export.qat import quantization_aware_training

        result = quantization_aware_training(
            model,
            to_inputs(images),
            labels,
            calibration=calibration,
            epochs=args.qat_epochs,
            learning_rate=args.qat_learning_rate,
        )
        qat = {
            "epochs": args.qat_epochs,
            "learning_rate": args.qat_learning_rate,
            "losses": result.losses,
            "fake_quantized_tensors": result.points,
        }
        print(
            f"QAT: {result.points} fake-quantized tensors, loss per epoch "
            + " ".join(f"{loss:.4f}" for loss in result.losses)
        )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    flatbuffers = tflite.convert_modes(model, modes, calibration, float_island_scopes=args.float_layers)
    report: dict = {"model": source_name, "input_size": size, **({"qat": qat} if qat else {}), "modes": {}}
    test = None
    if args.verify:
        images, labels, _ = verify.load_images(args.verify, "test", size, args.verify_size, args.data_dir)
        test = (to_inputs(images), labels)
    for mode, flatbuffer in flatbuffers.items():
        path = out / f"{source_name}_{mode}.tflite"
        path.write_bytes(flatbuffer)
        entry = {"file": path.name, "size_bytes": len(flatbuffer), "op_counts": tflite.op_counts(flatbuffer)}
        if test is not None:
            entry["parity"] = verify.parity_report(model, flatbuffer, *test)
            if mode in verify.PER_LAYER_MODES and calibration is not None:
                entry["worst_layers"] = verify.layer_errors(model, mode, calibration, test[0][:32])
            elif mode == "int16x8":  # the QuantizationDebugger does not instrument int16x8
                reference = flatbuffers.get("float32") or tflite.convert(model, "float32")
                errors = verify.tensor_errors(reference, flatbuffer, test[0][:8])
                entry["worst_tensors"] = sorted(errors, key=lambda e: -e["relative_error"])[:15]
        if args.bundle:
            labels = [str(i) for i in range(model.outputs[0].shape[-1])]
            bundle.write_bundle(
                out / f"{source_name}_{mode}",
                flatbuffer,
                labels=labels,
                source_model=source_name,
                mode=mode,
                preprocessing_in_model=preprocessing_in_model,
                mean=mean,
                std=std,
                output_activation=tflite.output_activation(model),
                golden=args.golden,
            )
        report["modes"][mode] = entry
        print(_summary(mode, entry))
    (out / f"{source_name}_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / (source_name + '_report.json')}")


def _summary(mode: str, entry: dict) -> str:
    line = f"{mode:8s} {entry['size_bytes'] / 1024:9.1f} KiB  {sum(entry['op_counts'].values())} ops"
    parity = entry.get("parity")
    if parity:
        line += (
            f"  max|Δ| {parity['max_abs_error']:.3g}  agreement {parity['top1_agreement']:.4f}"
            f"  acc keras {parity.get('keras_accuracy', float('nan')):.4f}"
            f" tflite {parity.get('tflite_accuracy', float('nan')):.4f}"
        )
    return line


def _bench(args: argparse.Namespace) -> int:
    from dynzoo.export import bench
    from dynzoo.profile_cli import _expand

    for name in ("--runs", "--rounds", "--input-size", "--calibration-size"):
        _check_positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.warmup < 0 or any(t < 1 for t in args.threads or []):
        raise ValueError("--warmup must be >= 0 and --threads positive.")
    bench.pyplot()  # matplotlib (the bench extra) is missing: say so now, not after minutes of timing
    if args.profile:
        return _bench_profile(args)
    xnnpack = {"on": [True], "off": [False], "both": [True, False]}[args.xnnpack or "both"]
    results = bench.run_bench(
        _expand(args.models or ["micronet_*"]),
        modes=args.modes or ["float32"],
        threads=args.threads or [1, 2],
        xnnpack=xnnpack,
        input_size=args.input_size,
        runs=args.runs,
        warmup=args.warmup,
        rounds=args.rounds,
        baselines=not args.no_baselines,
        preprocessing_in_model=args.preprocessing_in_model,
        calibration_size=args.calibration_size,
    )
    paths = bench.write_results(results, args.output or "bench")
    print(bench.markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _bench_profile(args: argparse.Namespace) -> int:
    """``dynzoo bench --profile MODEL``: the per-op latency of one model (:mod:`dynzoo.export.op_profile`)."""
    from dynzoo.export import op_profile
    from dynzoo.profile_cli import _expand

    if len(args.models) != 1:
        raise ValueError(
            f"--profile takes one model, got {len(args.models)}"
            + (f": {' '.join(args.models)}." if args.models else ".")
        )
    for flag, values in (("--mode", args.modes), ("--threads", args.threads)):
        if values and len(values) > 1:
            raise ValueError(f"--profile takes one {flag}, got {len(values)}.")
    if args.xnnpack == "both":
        raise ValueError("--profile takes --xnnpack on or off, not both.")
    model, mode = args.models[0], (args.modes or ["float32"])[0]
    threads, xnnpack = (args.threads or [1])[0], args.xnnpack != "off"
    is_file = model.endswith((".tflite", ".keras")) or Path(model).is_file()
    try:
        if not is_file:
            names = _expand([model])
            if len(names) != 1:
                raise ValueError(f"{model!r} matches {len(names)} models; give one.")
            model = names[0]
        label, flatbuffer = op_profile.flatbuffer_for(
            model,
            mode,
            input_size=args.input_size,
            calibration_size=args.calibration_size,
            preprocessing_in_model=args.preprocessing_in_model,
        )
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith("--profile") else f"--profile: {message}") from None
    stem = args.output or label
    command = [f"dynzoo bench --profile {model}"]
    if not model.endswith(".tflite"):
        command.append(
            f"--mode {mode}"
            + (f" --input-size {args.input_size}" if not is_file else "")
            + (" --preprocessing-in-model" if args.preprocessing_in_model and not is_file else "")
        )
    command.append(
        f"--threads {threads} --xnnpack {'on' if xnnpack else 'off'} --runs {args.runs} "
        f"--warmup {args.warmup} --rounds {args.rounds} -o {stem}"
    )
    profile = op_profile.profile_ops(
        flatbuffer,
        num_threads=threads,
        xnnpack=xnnpack,
        runs=args.runs,
        warmup=args.warmup,
        rounds=args.rounds,
        label=label,
    )
    paths = profile.write(stem, header=f"`{' '.join(command)}`")
    print(profile.summary())
    print(profile.layer_table(top=15))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
