"""Coverage-guided fuzzing of the .pth reader with atheris (libFuzzer for Python).

Each input is decoded by ``checkpoint_invariants.decode_input`` (a checkpoint file, or a pickle placed in
a valid archive) and run through ``check_load``: only CheckpointError may leave ``load_pth``, its
allocations stay within the budget, every value comes from the file, and loading the file into a
MicroNet-M0 fails only with a ValueError. Mutations draw on ``checkpoint_fuzz.dict`` (negative and huge
integers, tuples, memo and storage opcodes) unless another ``-dict=`` is given. Anything else is a finding: libFuzzer stops and writes the
input to ``-artifact_prefix``. Keep every finding in ``tests/checkpoint_corpus/`` (named
``finding-…``): ``test_checkpoint_fuzz.py`` replays the corpus on every run.

    # CI: 20 seconds, new inputs go to a scratch folder, the committed corpus is read only
    python tests/fuzz_checkpoints.py -max_total_time=60 -max_len=65536 SCRATCH tests/checkpoint_corpus
    # a longer campaign (README, "Fuzzing the checkpoint reader")
    python tests/fuzz_checkpoints.py -max_total_time=1800 -max_len=65536 -print_final_stats=1 \\
        SCRATCH tests/checkpoint_corpus
    # rewrite the seed inputs (valid zip, legacy and wrapped checkpoints, and their pickles)
    python tests/fuzz_checkpoints.py --write-seeds tests/checkpoint_corpus
"""

from __future__ import annotations

import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import atheris

with atheris.instrument_imports(include=["dynzoo.weights.pth", "pickletools", "zipfile"]):
    import dynzoo.weights.pth  # noqa: F401

import numpy as np
from checkpoint_invariants import STORAGES, check_load, decode_input
from torch_format import RawTensor, save_legacy_checkpoint, save_zip_checkpoint

DICTIONARY = Path(__file__).with_name("checkpoint_fuzz.dict")


def write_seeds(folder: Path) -> None:
    """Small valid checkpoints in every layout the reader accepts, as fuzz inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    state = {
        "conv.weight": rng.normal(size=(2, 3, 1, 1)).astype("f4"),
        "conv.bias": np.zeros(2, "f4"),
        "bn.num_batches_tracked": np.array(3),
        "half": np.ones(3, np.float16),
    }
    layouts = {
        "zip": state,
        "wrapped": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1},
        "nested": {"a": [state["conv.bias"], (state["conv.bias"],)], "b": {"c": state["conv.weight"]}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, obj in layouts.items():
            for writer, suffix in ((save_zip_checkpoint, ""), (save_legacy_checkpoint, "-legacy")):
                path = writer(obj, Path(tmp) / f"{name}{suffix}.pth")
                (folder / f"seed-{name}{suffix}").write_bytes(b"\x00" + path.read_bytes())
        # a pickle over the storages that decode_input supplies: views, a negative and a zero stride, a tie
        s = STORAGES
        weight = RawTensor("0", s["0"], 0, (4, 4), (4, 1))
        views = {
            "w": weight,
            "b": RawTensor("1", s["1"], 0, (16,), (1,)),
            "tied": weight,
            "t": [RawTensor("2", s["2"], 15, (16,), (-1,)), (RawTensor("3", s["3"], 2, (2, 3), (0, 1)),)],
        }
        with zipfile.ZipFile(save_zip_checkpoint(views, Path(tmp) / "views.pth")) as z:
            (folder / "seed-views-pickle").write_bytes(b"\x01" + z.read("archive/data.pkl"))


def main() -> None:
    if sys.argv[1:2] == ["--write-seeds"]:
        write_seeds(Path(sys.argv[2]))
        return
    import dynzoo

    model = dynzoo.create_model("micronet_m0", weights=None, input_shape=(32, 32, 3), classes=1000)

    tracemalloc.start()  # once for the whole run (see check_load)

    def one_input(data: bytes) -> None:
        check_load(decode_input(data), model)

    argv = sys.argv if any(a.startswith("-dict=") for a in sys.argv) else [*sys.argv, f"-dict={DICTIONARY}"]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
