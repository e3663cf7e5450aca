"""DRNet(S) on the offline digits at 32×32: Gumbel-softmax training, routing at T vs all branches,
batch-1 Keras latency against the measured MAdds, and the TFLite export's routing decisions.

Stage 1 trains with τ fixed (3.0) and no resource term; stage 2 restarts τ at 1.0, decays it to the floor
0.5 by the last epoch (the paper's schedule shape, compressed) and adds the resource term (λ). Then, on
the test split: accuracy and mean effective MAdds with every branch (T = 1) and with T; batch-1 latency
of the Keras model (a traced inference function; unselected branches are skipped) for several T, side by
side in one run; the float32 TFLite routing model run on every test image and its routing decisions
compared with Keras'.

    python benchmarks/drnet_digits.py            # writes benchmarks/results/drnet_digits.{md,json}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from dynzoo.cli import hyphenate_flags


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage1-epochs", type=int, default=4)
    p.add_argument("--stage2-epochs", type=int, default=4)
    p.add_argument("--resource-weight", type=float, default=0.1, help="λ of stage 2")
    p.add_argument("--threshold", type=float, default=0.8, help="T of inference routing")
    p.add_argument(
        "--sweep", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.6, 0.4], help="thresholds of the latency table"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--latency-images", type=int, default=60, help="test images timed at batch 1 per T")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-tflite", action="store_true")
    p.add_argument("--cells", type=int, default=None, help="a smaller DRNet for a quick check (default DRNet(S))")
    p.add_argument("--channels", type=int, default=None, help="a narrower DRNet for a quick check")
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "drnet_digits"))
    return p.parse_args(hyphenate_flags(sys.argv[1:]))


def accuracy(report, labels) -> float:
    return float((report.outputs.argmax(-1) == labels).mean())


def batch1_latency(network, images) -> float:
    """Median seconds of one inference-mode call at batch 1 (after a warm-up)."""
    import tensorflow as tf

    fn = tf.function(lambda x: network(x, training=False))
    for x in images[:3]:
        fn(x[None])
    times = []
    for x in images:
        start = time.perf_counter()
        fn(x[None])[0].numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def tflite_routing(flatbuffer: bytes, images: np.ndarray, routing_shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, routing weights) of a routing model's ``.tflite`` for every image, batch 1."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    details = interpreter.get_output_details()
    routing = next(d for d in details if tuple(d["shape"][1:]) == routing_shape)
    output = next(d for d in details if d is not routing)
    ys, ws = [], []
    for x in images:
        interpreter.set_tensor(inp["index"], x[None].astype("float32"))
        interpreter.invoke()
        ys.append(interpreter.get_tensor(output["index"])[0].copy())
        ws.append(interpreter.get_tensor(routing["index"])[0].copy())
    return np.stack(ys), np.stack(ws)


def main():
    args = parse_args()
    from dynzoo.data import digits_arrays
    from dynzoo.layers.routing import GumbelTemperatureSchedule, set_routing
    from dynzoo.models.drnet import DRNet, analyze_routing, routing_model
    from dynzoo.train.families.drnet import ResourceAwareTrainer, ResourceWeightSchedule

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = digits_arrays("train", 32)
    x_test, y_test = digits_arrays("test", 32)
    x_train, x_test = x_train.astype("float32"), x_test.astype("float32")

    network = DRNet("drnet_s", input_shape=(32, 32, 3), classes=10, cells=args.cells, channels=args.channels)
    trainer = ResourceAwareTrainer(network)
    epochs = args.stage1_epochs + args.stage2_epochs
    steps = epochs * math.ceil(len(x_train) / args.batch_size)
    trainer.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)))
    floor = 0.5
    schedule = GumbelTemperatureSchedule(
        initial=3.0,
        hold_epochs=args.stage1_epochs,
        restart=1.0,
        decay=floor ** (1 / max(args.stage2_epochs - 1, 1)),
        floor=floor,
    )
    start = time.perf_counter()
    history = trainer.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=epochs,
        verbose=2,
        callbacks=[schedule, ResourceWeightSchedule(args.resource_weight, args.stage1_epochs)],
    )
    train_seconds = time.perf_counter() - start
    set_routing(network, temperature=floor)

    routed = routing_model(network)
    rows = []
    for threshold in sorted(set(args.sweep) | {1.0, args.threshold}, reverse=True):
        set_routing(network, threshold=threshold)
        report = analyze_routing(network, x_test, routed=routed)
        latency = batch1_latency(network, x_test[: args.latency_images])
        rows.append(
            {
                "threshold": threshold,
                "accuracy": accuracy(report, y_test),
                "mean_madds_m": float(report.madds.mean() / 1e6),
                "madds_ratio": report.madds_ratio,
                "latency_ms": latency * 1e3,
                "usage": report.usage().round(3).tolist(),
            }
        )
        print(rows[-1]["threshold"], rows[-1]["accuracy"], rows[-1]["madds_ratio"], rows[-1]["latency_ms"], flush=True)
        if threshold == args.threshold:
            main_report = report
    full = next(r for r in rows if r["threshold"] == 1.0)
    main_row = next(r for r in rows if r["threshold"] == args.threshold)

    tflite = None
    if not args.skip_tflite:
        from dynzoo.export import op_counts, to_tflite

        set_routing(network, threshold=args.threshold)
        start = time.perf_counter()
        flatbuffer = to_tflite(routed)
        convert_seconds = time.perf_counter() - start
        t_out, t_weights = tflite_routing(flatbuffer, x_test, main_report.masks.shape[1:])
        same = np.all((t_weights > 0) == main_report.masks, axis=(1, 2, 3))
        tflite = {
            "identical_routing": float(same.mean()),
            "samples": int(len(same)),
            "top1_agreement": float((t_out.argmax(-1) == main_report.outputs.argmax(-1)).mean()),
            "max_abs_output_diff": float(np.abs(t_out - main_report.outputs).max()),
            "accuracy": float((t_out.argmax(-1) == y_test).mean()),
            "ops": op_counts(flatbuffer),
            "convert_seconds": convert_seconds,
        }

    result = {
        "model": "drnet_s",
        "input": "digits 32x32 (1347 train / 450 test)",
        "seed": args.seed,
        "stage1_epochs": args.stage1_epochs,
        "stage2_epochs": args.stage2_epochs,
        "resource_weight": args.resource_weight,
        "threshold": args.threshold,
        "train_seconds": train_seconds,
        "all_branch_madds_m": main_report.all_branch_madds / 1e6,
        "accuracy_all_branches": full["accuracy"],
        "accuracy_at_threshold": main_row["accuracy"],
        "accuracy_drop_points": 100 * (full["accuracy"] - main_row["accuracy"]),
        "madds_ratio_at_threshold": main_row["madds_ratio"],
        "sweep": rows,
        "tflite": tflite,
        "ops": list(main_report.ops),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        "# DRNet(S) on digits 32×32 — `python benchmarks/drnet_digits.py`",
        "",
        f"Training: {args.stage1_epochs} epochs τ = 3, λ = 0, then {args.stage2_epochs} epochs τ 1 → {floor}, "
        f"λ = {args.resource_weight}; Adam {args.lr} cosine, batch {args.batch_size}, seed {args.seed} "
        f"({train_seconds:.0f} s). All-branch MAdds: {main_report.all_branch_madds / 1e6:.2f} M.",
        "",
        f"**T = {args.threshold}: {main_row['madds_ratio']:.1%} of the all-branch MAdds on the test split, "
        f"accuracy {main_row['accuracy']:.2%} vs {full['accuracy']:.2%} with all branches "
        f"({result['accuracy_drop_points']:+.2f} points lost).**",
        "",
        "Batch-1 Keras latency (median over test images, unselected branches skipped), one run:",
        "",
        "| T | test accuracy | mean effective MAdds (M) | of all branches | batch-1 latency (ms) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['threshold']} | {r['accuracy']:.2%} | {r['mean_madds_m']:.2f} | {r['madds_ratio']:.1%} | "
        f"{r['latency_ms']:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Branch usage per cell at T = {args.threshold} (fraction of connections × test images):",
        "",
        main_report.usage_table(),
    ]
    if tflite:
        lines += [
            "",
            f"Float32 TFLite (builtin ops only) routing model at T = {args.threshold} on the "
            f"{tflite['samples']} test images: **{tflite['identical_routing']:.2%} identical routing "
            f"decisions**, top-1 agreement {tflite['top1_agreement']:.2%}, max |Δ output| "
            f"{tflite['max_abs_output_diff']:.2e}, accuracy {tflite['accuracy']:.2%}; ops: "
            + ", ".join(f"{k} {v}" for k, v in sorted(tflite["ops"].items()))
            + ".",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
