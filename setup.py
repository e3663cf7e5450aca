"""dynzoo: dynamic convolutional networks for Keras 3 with TFLite deployment."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "dynzoo" / "__init__.py").read_text()).group(1)

setup(
    name="dynzoo",
    version=VERSION,
    description="Dynamic convolutional networks (MicroNet, DCD, CDB, DRNet, DDW, DDN, DRT) for Keras 3 and TFLite",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # `export/` and `zoo_configs/` sit at the top of the repository but install inside the package, so
    # `import dynzoo.export` and the configurations work from any folder after `pip install .` and after
    # `pip install -e .` (tests/test_install.py checks both).
    packages=["dynzoo", *(f"dynzoo.{p}" for p in find_packages("dynzoo")), "dynzoo.export", "dynzoo.zoo_configs"],
    package_dir={"dynzoo": "dynzoo", "dynzoo.export": "export", "dynzoo.zoo_configs": "zoo_configs"},
    # web_demo_site/: the web demo page, present when it was built (`npm --prefix web_demo run build`) first
    package_data={"dynzoo": ["web_demo_site/**/*"], "dynzoo.zoo_configs": ["*.json"], "dynzoo.data": ["*.json"]},
    install_requires=[
        # The CPU wheel; GPU users swap it for `tensorflow[and-cuda]` (README, "Install").
        "tensorflow-cpu>=2.21,<2.22",
        "keras>=3.10,<4",
        "numpy>=1.26",
        "h5py>=3.10",
        "ai-edge-litert>=2.3,<2.4",
        "scikit-learn>=1.3",  # ships the offline default dataset (handwritten digits)
        "absl-py>=1.4",  # `dynzoo train` flags
        "tensorboard>=2.21,<2.22",  # `dynzoo train` writes TensorBoard logs
    ],
    extras_require={
        # atheris: the checkpoint reader's fuzzing gate (Linux wheels; elsewhere that one test skips)
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "tensorflow-datasets>=4.9",
            "matplotlib>=3.7",  # the bench tests draw the charts
            # tests/test_install.py installs the checkout offline (--no-build-isolation): the build backend
            "setuptools>=64",
            "wheel",
            "atheris>=2.3,<3.1; platform_system == 'Linux' and platform_machine == 'x86_64'",
        ],
        "bench": ["matplotlib>=3.7"],  # `dynzoo bench`'s PNG charts (latency vs MAdds, per-op profile)
        "datasets": ["tensorflow-datasets>=4.9"],  # TFDS datasets by name (imagenet2012, cifar10, …)
        "lint": ["ruff==0.17.6"],  # pinned: `ruff format` output changes between versions; .ci/run reads this pin
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.6"],
        # Keras' other backends, for tests/test_backends.py (export stays on TensorFlow)
        "backends": ["jax[cpu]>=0.4.30", "torch>=2.4"],
        # Keras' ONNX exporter on TensorFlow, and a runtime to check it (tests/test_onnx.py)
        "onnx": ["tf2onnx>=1.16", "onnxruntime>=1.18", "onnx>=1.16"],
    },
    entry_points={"console_scripts": ["dynzoo=dynzoo.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
