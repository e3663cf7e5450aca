"""Per-op latency of a TFLite model, mapped back to the Keras layers it came from (``dynzoo bench --profile``).

The Python LiteRT interpreter has no per-op profiler, so the model is measured op by op:

1. :func:`split_ops` cuts the main subgraph into one single-op model per operator: the operator, its
   constant inputs (weights, biases, shapes) and its other inputs as the model's inputs.
2. :func:`profile_ops` times every single-op model with the interpreter (the default delegates, i.e.
   XNNPACK, or the builtin kernels only) in one fresh subprocess, each fed the values its inputs take in
   the whole model on a seeded random input; an op's time is the median over many invocations less the
   per-invoke overhead measured on a trivial model in the same process (floored at 0). The whole model is
   timed in the same process, so the sum of the ops beside it shows what the hand-overs between XNNPACK
   partitions and builtin kernels (and the per-op model boundaries) cost. A PAD that feeds a convolution
   (:func:`pad_pairs`), which XNNPACK folds into it, is also timed together with it and charged what it
   adds: alone it is a copy that the whole model never makes.
3. :func:`xnnpack_delegation` says which ops XNNPACK takes in the *whole* model, and in how many partitions.

>>> from dynzoo.export.op_profile import profile_ops
>>> profile = profile_ops(open("model.tflite", "rb").read())
>>> print(profile.layer_table())
>>> profile.write("model")  # model_profile.md, model_profile.json, model_profile.png

A single-op model times its op alone: a delegated op pays its partition's entry and exit once per op
here, but once per partition in the whole model, and caches are colder or warmer than in the chain.
The per-op times are a breakdown of where the time goes, not an exact decomposition of the total.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynzoo.export.flatbuffer import is_tflite, operator_name, read_model, write_model
from dynzoo.export.tflite import layer_of

DEFAULT_RUNS = 100
DEFAULT_WARMUP = 5
DEFAULT_ROUNDS = 5
PLOT_LAYERS = 25  # layers in the bar chart
# What the columns mean, in every markdown report.
COLUMNS = (
    "Columns: **µs** is an op's median time alone in a single-op model, less the per-invoke overhead; "
    "**XNNPACK** says whether XNNPACK takes the op in the whole model (a `no` runs on LiteRT's builtin kernel and "
    "splits the graph into partitions); **Keras layer** is the layer the op's output tensor was named after "
    "(`a + b`: an op fused from several layers; `layer → OP`: the op's tensors carry no layer name, so it is shown "
    "after the layer of the op that feeds it, e.g. a grouped convolution the converter named `convolutionN`). "
    "A PAD that feeds a convolution, which XNNPACK folds into it, is timed together with it: its µs is what it "
    "adds to the convolution alone (`with #N`). The sum exceeds the whole model where single-op models lose what "
    "the chain gains (fused ops, warm caches), and falls short of it by the hand-overs between partitions."
)


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One operator of the main subgraph: ``us`` is its median time in µs less the per-invoke overhead
    (≥ 0; for a PAD that feeds a convolution, which XNNPACK may fold into it, what the PAD adds to that
    convolution's time, ``with_op`` its index); ``raw_us`` the median of its single-op model as measured;
    ``xnnpack`` whether XNNPACK takes it in the whole model; ``layer`` as in :class:`OpInfo`; ``error`` why
    its single-op model could not be timed (``us`` 0)."""

    index: int
    op: str
    layer: str
    tensor: str  # its first output tensor's name
    output_shape: tuple[int, ...]
    dtype: str
    xnnpack: bool
    us: float
    raw_us: float
    error: str | None = None
    with_op: int | None = None  # a PAD timed with the convolution it feeds: ``us`` is what it adds to that


@dataclasses.dataclass(frozen=True)
class LayerTime:
    """The ops of one Keras layer (or fused-name group, ``a + b``) summed."""

    layer: str
    us: float
    percent: float
    ops: int
    xnnpack_ops: int


@dataclasses.dataclass(frozen=True)
class OpProfile:
    """The per-op latency of a model (:func:`profile_ops`)."""

    ops: list[OpTime]
    model_us: float  # the whole model's median latency in the same process
    overhead_us: float  # per-invoke overhead (trivial model), subtracted from every op
    partitions: int  # XNNPACK partitions of the whole model (0 with XNNPACK off)
    num_threads: int
    xnnpack: bool
    runs: int
    label: str = "model"
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def total_us(self) -> float:
        """The sum of the per-op times."""
        return float(sum(op.us for op in self.ops))

    def layers(self) -> list[LayerTime]:
        """Per-layer sums, longest first."""
        groups: dict[str, list[OpTime]] = collections.defaultdict(list)
        for op in self.ops:
            groups[op.layer].append(op)
        total = self.total_us or 1.0
        rows = [
            LayerTime(
                layer,
                float(sum(o.us for o in ops)),
                100.0 * sum(o.us for o in ops) / total,
                len(ops),
                sum(o.xnnpack for o in ops),
            )
            for layer, ops in groups.items()
        ]
        return sorted(rows, key=lambda r: (-r.us, r.layer))

    def table(self, sort: str = "index") -> str:
        """Markdown table, one row per op, in execution order (``sort="index"``) or longest first (``"time"``)."""
        if sort not in ("index", "time"):
            raise ValueError(f"`sort` must be 'index' or 'time', got {sort!r}.")
        ops = self.ops if sort == "index" else sorted(self.ops, key=lambda o: (-o.us, o.index))
        lines = ["| # | op | Keras layer | output | XNNPACK | µs |", "|---:|---|---|---|:---:|---:|"]
        for o in ops:
            shape = "×".join(str(d) for d in o.output_shape) or "scalar"
            time = "failed" if o.error else f"{o.us:.1f}" + (f" (with #{o.with_op})" if o.with_op is not None else "")
            lines.append(
                f"| {o.index} | {o.op} | {_cell(o.layer)} | {shape} {o.dtype} | "
                f"{'yes' if o.xnnpack else 'no'} | {time} |"
            )
        return "\n".join(lines)

    def layer_table(self, top: int | None = None) -> str:
        """Markdown table, one row per Keras layer, longest first (the first ``top`` only, if given)."""
        lines = ["| Keras layer | µs | % of total | ops | XNNPACK ops |", "|---|---:|---:|---:|---:|"]
        for r in self.layers()[:top]:
            lines.append(f"| {_cell(r.layer)} | {r.us:.1f} | {r.percent:.1f} | {r.ops} | {r.xnnpack_ops} |")
        return "\n".join(lines)

    def summary(self) -> str:
        """What was measured and how the per-op sum compares with the whole model."""
        outside = [o for o in self.ops if not o.xnnpack]
        failed = [o for o in self.ops if o.error]
        ratio = self.total_us / self.model_us if self.model_us else float("nan")
        kernels = (
            f"XNNPACK: {self.partitions} partition{'s' * (self.partitions != 1)}, "
            f"{len(self.ops) - len(outside)} of {len(self.ops)} ops delegated"
            if self.xnnpack
            else "XNNPACK off (builtin kernels only)"
        )
        return "\n".join(
            [
                (
                    f"- {len(self.ops)} ops, {self.num_threads} thread{'s' * (self.num_threads != 1)}, batch 1, "
                    f"median of {self.runs} runs per op; {kernels}."
                ),
                (
                    f"- Sum of the per-op times: **{self.total_us / 1000:.3f} ms**; the whole model: "
                    f"**{self.model_us / 1000:.3f} ms** (sum / whole = {ratio:.2f})."
                ),
                f"- Per-invoke overhead subtracted from every op: {self.overhead_us:.1f} µs (a trivial model).",
                *(
                    [
                        (
                            f"- {len(failed)} single-op models could not be timed (counted as 0), e.g. op "
                            f"{failed[0].index} {failed[0].op}: {failed[0].error}"
                        )
                    ]
                    if failed
                    else []
                ),
            ]
        )

    def markdown(self, title: str | None = None, header: str = "") -> str:
        """The whole report: summary, the per-layer table and the per-op table."""
        env = self.environment
        parts = [f"# {title or 'Per-op latency: ' + self.label}", ""]
        if header:
            parts += [header, ""]
        parts += [self.summary(), ""]
        if env:
            parts += [
                (f"LiteRT interpreter (ai-edge-litert {env.get('ai_edge_litert', '?')}) on {env.get('cpu', '?')}."),
                "",
            ]
        parts += [COLUMNS, ""]
        parts += ["## Per Keras layer", "", self.layer_table(), "", "## Per op (execution order)", "", self.table(), ""]
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary: the settings, the totals, every op and every layer."""
        return {
            "model": self.label,
            "num_threads": self.num_threads,
            "xnnpack": self.xnnpack,
            "runs": self.runs,
            "partitions": self.partitions,
            "model_us": self.model_us,
            "sum_us": self.total_us,
            "overhead_us": self.overhead_us,
            "environment": self.environment,
            "ops": [{**dataclasses.asdict(o), "output_shape": list(o.output_shape)} for o in self.ops],
            "layers": [dataclasses.asdict(r) for r in self.layers()],
        }

    def plot(self, path: str | os.PathLike, top: int = PLOT_LAYERS) -> Path:
        """PNG: horizontal bars of the ``top`` longest layers (red where any op of it runs outside XNNPACK)."""
        from dynzoo.export.bench import pyplot

        plt = pyplot()
        rows = self.layers()[:top][::-1]
        fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.6))
        colors = ["tab:blue" if r.xnnpack_ops == r.ops else "tab:red" for r in rows]
        ax.barh(range(len(rows)), [r.us for r in rows], color=colors)
        ax.set_yticks(range(len(rows)), [_short(r.layer) for r in rows], fontsize=7)
        ax.set_xlabel("µs (sum of the layer's ops)")
        ax.set_title(
            f"{self.label}: top {len(rows)} layers; sum {self.total_us / 1000:.2f} ms, whole model "
            f"{self.model_us / 1000:.2f} ms\n(red: an op runs outside XNNPACK)",
            fontsize=9,
        )
        ax.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return Path(path)

    def write(self, stem: str | os.PathLike, title: str | None = None, header: str = "") -> list[Path]:
        """``STEM_profile.md``, ``STEM_profile.json`` and ``STEM_profile.png``."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        base = stem.parent / f"{stem.name}_profile"
        md, js = base.with_name(base.name + ".md"), base.with_name(base.name + ".json")
        md.write_text(self.markdown(title, header))
        js.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return [md, js, self.plot(base.with_name(base.name + ".png"))]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


# --- the flatbuffer ------------------------------------------------------------------------------------


def _is_constant(model, tensor) -> bool:
    """A tensor whose buffer holds data (weights, biases, shape operands)."""
    if not tensor.buffer:
        return False
    buffer = model.buffers[tensor.buffer]
    return (buffer.data is not None and len(buffer.data) > 0) or buffer.offset > 1


def _inputs(model, graph, op) -> list[int]:
    """The non-constant inputs of ``op`` (tensor indices, each once, in order)."""
    found: list[int] = []
    for i in op.inputs:
        if i >= 0 and i not in found and not _is_constant(model, graph.tensors[i]):
            found.append(int(i))
    return found


def split_ops(flatbuffer: bytes) -> list[bytes]:
    """One single-op model per operator of the main subgraph, in execution order.

    Each keeps its operator, the tensors it reads and writes and the buffers of its constant inputs;
    its other inputs (each once, in the operator's order) are the model's inputs and its outputs the
    model's outputs. Signatures and metadata are dropped. A model with several subgraphs (control flow)
    keeps them, and all its buffers, in every single-op model."""
    schema, model = read_model(flatbuffer)
    return [_ops_model(schema, model, [index]) for index in range(len(model.subgraphs[0].operators))]


def _group_inputs(model, graph, indices: Sequence[int]) -> list[int]:
    """The non-constant inputs of the operators ``indices`` that none of them produces (each once)."""
    produced = {int(t) for i in indices for t in graph.operators[i].outputs}
    found: list[int] = []
    for i in indices:
        found += [t for t in _inputs(model, graph, graph.operators[i]) if t not in produced and t not in found]
    return found


def _ops_model(schema, model, indices: Sequence[int]) -> bytes:
    """A model of the operators ``indices`` (in that order) of ``model``'s main subgraph: the inputs none of
    them produces are its inputs, the last operator's outputs its outputs."""
    graph = model.subgraphs[0]
    keep_all = len(model.subgraphs) > 1  # a WHILE or IF op calls the other subgraphs by index
    tensors: list = []
    buffers = list(model.buffers) if keep_all else [schema.BufferT()]
    remap: dict[int, int] = {}

    def local(index: int) -> int:
        if index < 0:  # an optional input left out
            return index
        if index not in remap:
            tensor = copy.copy(graph.tensors[index])
            if not keep_all:  # only the constants this group reads, in a fresh buffer list
                if _is_constant(model, tensor):
                    buffers.append(model.buffers[tensor.buffer])
                    tensor.buffer = len(buffers) - 1
                else:
                    tensor.buffer = 0
            remap[index] = len(tensors)
            tensors.append(tensor)
        return remap[index]

    operators = []
    for i in indices:
        op = graph.operators[i]
        single = copy.copy(op)
        single.inputs = [local(int(t)) for t in op.inputs]
        single.outputs = [local(int(t)) for t in op.outputs]
        if op.intermediates is not None:
            single.intermediates = [local(int(t)) for t in op.intermediates]
        operators.append(single)
    sub = schema.SubGraphT()
    sub.tensors, sub.operators, sub.name = tensors, operators, graph.name
    sub.inputs = [remap[t] for t in _group_inputs(model, graph, indices)]
    sub.outputs = list(operators[-1].outputs)
    out = schema.ModelT()
    out.version, out.description, out.operatorCodes = model.version, model.description, model.operatorCodes
    out.subgraphs = [sub, *model.subgraphs[1:]] if keep_all else [sub]
    out.buffers = buffers
    return write_model(out)


# XNNPACK folds an explicit zero PAD into the convolution it feeds; alone, the PAD is a copy that the whole
# model never makes. Such a PAD is timed together with its convolution, and charged the difference.
PADS = ("PAD", "PADV2")
PADDED_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def pad_pairs(flatbuffer: bytes) -> dict[int, int]:
    """``{PAD index: convolution index}`` for every PAD whose output only a CONV_2D or DEPTHWISE_CONV_2D reads
    (as its data input) and that is not a model output: the pairs XNNPACK may fuse."""
    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    consumers: dict[int, list[int]] = collections.defaultdict(list)
    for index, op in enumerate(graph.operators):
        for t in {int(t) for t in op.inputs if t >= 0}:
            consumers[t].append(index)
    outputs = {int(t) for t in graph.outputs}
    pairs = {}
    for index, op in enumerate(graph.operators):
        out = int(op.outputs[0])
        readers = consumers.get(out, [])
        if (
            operator_name(schema, model, op) in PADS
            and len(op.outputs) == 1
            and out not in outputs
            and len(readers) == 1
            and operator_name(schema, model, graph.operators[readers[0]]) in PADDED_CONVOLUTIONS
            and int(graph.operators[readers[0]].inputs[0]) == out
        ):
            pairs[index] = readers[0]
    return pairs


def _trivial_model() -> bytes:
    """A float32 ADD of a one-element input with itself: what an invoke costs around an op."""
    from ai_edge_litert import schema_py_generated as schema  # the schema read_model uses

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    tensors = []
    for name in (b"x", b"y"):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = [1], schema.TensorType.FLOAT32, 0, name
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    sub = schema.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs = tensors, [op], [0], [1]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], [schema.BufferT()]
    return write_model(model)


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """What the flatbuffer says about one operator. ``layer``: :func:`~dynzoo.export.tflite.layer_of` of
    its first output tensor; where none of that tensor's names carries a name scope (the converter's
    ``convolution21`` of a grouped convolution), ``<layer of the op that feeds it> → <op>`` and
    ``layer_inferred`` is True."""

    index: int
    op: str
    tensor: str
    output_shape: tuple[int, ...]
    dtype: str
    inputs: tuple[int, ...]  # non-constant input tensors (indices in the whole model)
    outputs: tuple[int, ...]
    layer: str
    layer_inferred: bool


def op_info(flatbuffer: bytes) -> list[OpInfo]:
    """Type, first output tensor, Keras layer, non-constant inputs and outputs of every operator of the
    main subgraph, in execution order."""

    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    producer: dict[int, int] = {}
    scoped_layer: list[str] = []  # per op: the named layer it belongs to, or that of the op feeding it
    infos = []
    for index, op in enumerate(graph.operators):
        out = graph.tensors[op.outputs[0]]
        name, kind, inputs = out.name.decode(), operator_name(schema, model, op), tuple(_inputs(model, graph, op))
        inferred = not any("/" in part for part in name.split(";"))
        if not inferred:
            layer = base = layer_of(name)
        else:
            feeding = next((producer[t] for t in inputs if t in producer), None)
            base = scoped_layer[feeding] if feeding is not None else layer_of(name)
            layer = f"{base} → {kind}"
        scoped_layer.append(base)
        for t in op.outputs:
            producer[int(t)] = index
        infos.append(
            OpInfo(
                index,
                kind,
                name,
                tuple(int(d) for d in (out.shape if out.shape is not None else ())),
                types.get(out.type, str(out.type)),
                inputs,
                tuple(int(t) for t in op.outputs),
                layer,
                inferred,
            )
        )
    return infos


# --- XNNPACK -------------------------------------------------------------------------------------------


def xnnpack_delegation(flatbuffer: bytes, num_threads: int = 1) -> tuple[list[bool], int]:
    """(for every operator, whether XNNPACK takes it in the whole model; the number of XNNPACK partitions).

    With the default delegates the interpreter lists the original ops and one ``DELEGATE`` node per
    XNNPACK partition. An op runs outside XNNPACK when it feeds a partition or the model's outputs without
    itself being a partition's output, or when it feeds such an op through a tensor no partition writes."""
    from ai_edge_litert.interpreter import Interpreter

    from dynzoo.logs import native_stderr_quiet

    with native_stderr_quiet():
        interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
        interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    originals = {n["index"]: n for n in nodes if n["op_name"] != "DELEGATE"}
    delegate_in = {int(t) for n in delegates for t in n["inputs"]}
    delegate_out = {int(t) for n in delegates for t in n["outputs"]}
    model_out = {int(t) for t in interpreter._interpreter.OutputIndices()}
    producer = {int(t): index for index, n in originals.items() for t in n["outputs"]}
    outside = {
        index
        for index, n in originals.items()
        if any(int(t) in delegate_in or int(t) in model_out for t in n["outputs"])
        and not any(int(t) in delegate_out for t in n["outputs"])
    }
    todo = list(outside)
    while todo:
        for t in originals[todo.pop()]["inputs"]:
            p = producer.get(int(t))
            if int(t) not in delegate_out and p is not None and p not in outside:
                outside.add(p)
                todo.append(p)
    if not delegates:  # nothing delegated (XNNPACK takes none of the ops)
        outside = set(originals)
    return [i not in outside for i in range(len(originals))], len(delegates)  # the original ops: indices 0…n−1


# --- timing --------------------------------------------------------------------------------------------


def intermediate_values(flatbuffer: bytes, seed: int = 0) -> dict[int, np.ndarray]:
    """Every tensor's value in one run of the whole model (builtin kernels, all tensors preserved) on
    seeded random inputs of the input type: what the single-op models are fed."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], random_input(rng, detail["shape"], detail["dtype"]))
    interpreter.invoke()
    values = {}
    for detail in interpreter.get_tensor_details():
        try:
            values[detail["index"]] = interpreter.get_tensor(detail["index"]).copy()
        except ValueError:  # a tensor without data (an optional or scratch tensor)
            pass
    return values


def random_input(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Random data of a dtype: the whole integer range, or standard normal floats."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def profile_ops(
    flatbuffer: bytes,
    *,
    num_threads: int = 1,
    xnnpack: bool = True,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    rounds: int = DEFAULT_ROUNDS,
    label: str = "model",
    timeout_s: float = 1800.0,
) -> OpProfile:
    """Per-op latency of a TFLite model, each op mapped to its Keras layer.

    Every single-op model of :func:`split_ops` and the whole model are loaded in one fresh subprocess
    (LiteRT and NumPy only), warmed up, then timed in ``rounds`` rounds that each invoke every model
    ``runs / rounds`` times in turn (so that drift of the machine hits all alike). An op's time is its
    median less the median of a trivial model's invocations (the per-invoke overhead), floored at 0.

    Args:
        flatbuffer: the ``.tflite`` model (batch 1).
        num_threads: interpreter threads (≥ 1).
        xnnpack: True: the default delegates (XNNPACK); False: LiteRT's builtin kernels only.
        runs: timed invocations per model (≥ 1; at least one per round).
        warmup: untimed invocations of each model first (≥ 0).
        rounds: rounds over all models (≥ 1).
        label: the model's name in the report.
        timeout_s: the subprocess is killed after this many seconds.

    Raises:
        ValueError: bad arguments or not a TFLite flatbuffer.
        RuntimeError: the interpreter failed or its process crashed (the message says how).
    """
    from dynzoo.export.benchmark import _check_counts, _run_child

    _check_counts(("num_threads", num_threads, 1), ("runs", runs, 1), ("warmup", warmup, 0), ("rounds", rounds, 1))
    infos = op_info(flatbuffer)
    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    pairs = pad_pairs(flatbuffer) if xnnpack else {}
    groups = [[i] for i in range(len(infos))] + [[pad, conv] for pad, conv in pairs.items()]
    delegated, partitions = xnnpack_delegation(flatbuffer, num_threads) if xnnpack else ([False] * len(infos), 0)
    values = intermediate_values(flatbuffer)
    rounds = min(rounds, runs)
    with tempfile.TemporaryDirectory(prefix="dynzoo_op_profile_") as tmp:
        root = Path(tmp)
        paths, feeds = [], [None, None]
        for name, content in [("whole", flatbuffer), ("trivial", _trivial_model())]:
            (root / f"{name}.tflite").write_bytes(content)
            paths.append(str(root / f"{name}.tflite"))
        needed: set[int] = set()
        for k, group in enumerate(groups):
            (root / f"group{k}.tflite").write_bytes(_ops_model(schema, model, group))
            paths.append(str(root / f"group{k}.tflite"))
            inputs = _group_inputs(model, graph, group)
            feeds.append([f"t{t}" for t in inputs])
            needed.update(inputs)
        np.savez(root / "inputs.npz", **{f"t{t}": values[t] for t in sorted(needed)})
        request = {
            "paths": paths,
            "feeds": feeds,
            "inputs": str(root / "inputs.npz"),
            "num_threads": num_threads,
            "xnnpack": bool(xnnpack),
            "warmup": warmup,
            "runs": runs,
            "rounds": rounds,
        }
        (root / "request.json").write_text(json.dumps(request))
        result, error = _run_child(_CHILD, {"request": str(root / "request.json")}, timeout_s)
    if error:
        raise RuntimeError(f"{label}: timing the single-op models failed: {error}")
    medians, errors = result["median_us"], result["errors"]
    if errors[0] or errors[1]:
        raise RuntimeError(
            f"{label}: the interpreter failed on the {'whole' if errors[0] else 'trivial'} model: "
            f"{errors[0] or errors[1]}"
        )
    model_us, overhead_us = medians[0], medians[1]
    raw, failures = medians[2 : 2 + len(infos)], errors[2 : 2 + len(infos)]
    paired = dict(zip(pairs, zip(medians[2 + len(infos) :], errors[2 + len(infos) :], strict=False), strict=False))
    ops = []
    for info in infos:
        alone, error, fused_into = raw[info.index], failures[info.index], None
        us = 0.0 if alone is None else max(0.0, alone - overhead_us)
        pair = paired.get(info.index)
        conv = raw[pairs[info.index]] if info.index in pairs else None
        if pair is not None and pair[0] is not None and conv is not None and alone is not None:
            # what the PAD adds to its convolution: the pair less the convolution alone (each with one overhead)
            us, fused_into = max(0.0, pair[0] - conv), pairs[info.index]
        ops.append(
            OpTime(
                info.index,
                info.op,
                info.layer,
                info.tensor,
                info.output_shape,
                info.dtype,
                bool(delegated[info.index]),
                us,
                0.0 if alone is None else alone,
                error,
                fused_into,
            )
        )
    return OpProfile(ops, model_us, overhead_us, partitions, num_threads, bool(xnnpack), runs, label, _environment())


def _environment() -> dict[str, Any]:
    import platform
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    return {"cpu": cpu, "machine": platform.machine(), "ai_edge_litert": version("ai-edge-litert"), "batch": 1}


# The timing child: stdlib + NumPy + ai_edge_litert only. Prints one JSON line: {"median_us": [per model, or
# null], "errors": [per model: null, or why it could not be loaded or run]}.
_CHILD = r"""
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

req = json.load(open(json.loads(sys.argv[1])["request"]))
resolver = OpResolverType.AUTO if req["xnnpack"] else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
inputs = np.load(req["inputs"])
rng = np.random.default_rng(0)

def load(path, feed):
    it = Interpreter(model_path=path, num_threads=req["num_threads"], experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    for k, d in enumerate(it.get_input_details()):
        if feed is not None:
            x = inputs[feed[k]]
        elif np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = rng.integers(info.min, info.max, size=d["shape"], endpoint=True)
        else:
            x = rng.standard_normal(d["shape"])
        it.set_tensor(d["index"], np.asarray(x).astype(d["dtype"]).reshape(d["shape"]))
    for _ in range(req["warmup"]):
        it.invoke()
    return it._interpreter.Invoke  # the native call: the wrapper's checks would add to every time

invokes, errors = [], []
for path, feed in zip(req["paths"], req["feeds"]):
    try:
        invokes.append(load(path, feed))
        errors.append(None)
    except Exception as e:
        invokes.append(None)
        errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
counts = [req["runs"] // req["rounds"] + (r < req["runs"] % req["rounds"]) for r in range(req["rounds"])]
times = [[] for _ in invokes]
clock = time.perf_counter_ns
for n in counts:
    for k, (invoke, t) in enumerate(zip(invokes, times)):
        if invoke is None:
            continue
        try:
            for _ in range(n):
                t0 = clock()
                invoke()
                t.append(clock() - t0)
        except Exception as e:
            invokes[k], errors[k] = None, f"{type(e).__name__}: {e}".splitlines()[0]
print(json.dumps({"median_us": [None if e else float(np.median(t)) / 1000 for t, e in zip(times, errors)],
                  "errors": errors}))
"""


def flatbuffer_for(
    model: str,
    mode: str = "float32",
    *,
    input_size: int = 224,
    calibration_size: int = 32,
    preprocessing_in_model: bool = False,
) -> tuple[str, bytes]:
    """(a label, the flatbuffer) of what ``dynzoo bench --profile MODEL`` profiles: a ``.tflite`` file as
    it is (``mode`` ignored), or a ``.keras`` file or a registered model name converted in ``mode``
    (integer modes calibrated on seeded uniform noise with a full-range ramp first)."""
    path = Path(model)
    if model.endswith(".tflite") or (path.is_file() and not model.endswith(".keras")):
        if not path.is_file():
            raise ValueError(f"--profile: no such .tflite file {model!r}.")
        content = path.read_bytes()
        if not is_tflite(content):
            raise ValueError(f"--profile: {model!r} is not a TFLite flatbuffer (no 'TFL3' identifier).")
        return path.stem, content
    import keras

    from dynzoo.export.tflite import CALIBRATED_MODES, convert, full_range_first
    from dynzoo.export.verify import model_inputs
    from dynzoo.models.common import IMAGENET_MEAN, IMAGENET_STD

    if model.endswith(".keras"):
        from dynzoo.registry import load_model

        built = load_model(model)
        name = path.stem
        preprocessing_in_model = any(layer.name == "preprocessing" for layer in built.layers)
    else:
        from dynzoo.registry import create_model, get_entry

        name = get_entry(model).name  # unknown names: a ValueError that lists the close ones
        keras.utils.set_random_seed(0)
        built = create_model(
            name, weights=None, input_shape=(input_size, input_size, 3), include_preprocessing=preprocessing_in_model
        )
    data = None
    if mode in CALIBRATED_MODES:
        size = tuple(built.inputs[0].shape[1:])
        noise = np.random.default_rng(0).uniform(0.0, 255.0, (calibration_size, *size)).astype("float32")
        data = model_inputs(
            full_range_first(noise), preprocessing_in_model=preprocessing_in_model, mean=IMAGENET_MEAN, std=IMAGENET_STD
        )
    return f"{name}_{mode}", convert(built, mode, data)


__all__: Sequence[str] = [
    "LayerTime",
    "OpInfo",
    "OpProfile",
    "OpTime",
    "flatbuffer_for",
    "intermediate_values",
    "op_info",
    "profile_ops",
    "random_input",
    "split_ops",
    "xnnpack_delegation",
]
