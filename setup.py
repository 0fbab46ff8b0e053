"""tinybert_tf: TinyBERT-style distillation of keras-hub BERT-family teachers (Keras 3 / TensorFlow)."""

import os

from setuptools import find_packages, setup

DESCRIPTION = "Distil keras-hub BERT-family teachers into small TinyBERT-style students."


def long_description():
    """README.md beside this file (a checkout or an sdist), else the one-line description."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
    if not os.path.isfile(path):
        return DESCRIPTION
    with open(path, encoding="utf-8") as f:
        return f.read()


setup(
    name="tinybert_tf",
    version="0.1.0",
    description=DESCRIPTION,
    long_description=long_description(),
    long_description_content_type="text/markdown",
    # tinybert_tf.configs (the --config files) and tinybert_tf.tools are packages: in every wheel.
    packages=find_packages(include=["tinybert_tf", "tinybert_tf.*"]),
    python_requires=">=3.10",
    # `tinybert-tf --config=task_distill:tiny --workdir=DIR` = `python -m tinybert_tf.main ...`;
    # each tool also runs as `python -m tinybert_tf.tools.<name>`.
    entry_points={"console_scripts": [
        "tinybert-tf=tinybert_tf.main:entry",
        "tinybert-tf-prepare-corpus=tinybert_tf.tools.prepare_corpus:entry",
        "tinybert-tf-augment=tinybert_tf.tools.augment:entry",
        "tinybert-tf-export=tinybert_tf.tools.export:entry",
    ]},
    # Lower bounds are the oldest versions this package was tested with (see README);
    # tensorflow>=2.18 keeps Cloud TPU VM images (tensorflow-tpu lags the CPU wheels) installable.
    install_requires=[
        "tensorflow>=2.18",
        "keras>=3.12",
        "keras-hub>=0.32",
        "tensorflow-text>=2.18",
        "tensorboard>=2.18",
        # PredictionLog protos for TF Serving warm-up records (tinybert_tf.export.publish).
        "tensorflow-serving-api>=2.18",
        "tensorflow-datasets>=4.9",
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "safetensors>=0.4",
        "numpy>=1.26",
        "tqdm>=4.60",
    ],
    extras_require={
        # jax: the Distiller's JAX-backend step is tested against the TF step in the suite.
        # setuptools + wheel: tests/test_install_wheel.py builds the wheel without build isolation.
        "test": ["pytest>=8", "pytest-xdist>=3.8", "setuptools>=61", "wheel>=0.38", "ruff==0.17.6", "matplotlib>=3.8", "jax>=0.10", "orbax-checkpoint>=0.12", "scikit-learn>=1.9", "scipy>=1.17", "seqeval>=1.2.2"],
        "demo": ["matplotlib>=3.8"],
        "jax": ["jax>=0.10", "orbax-checkpoint>=0.12"],
        # NVIDIA GPUs on Linux: TensorFlow with its CUDA libraries (the same bound as above) and
        # the Keras JAX backend's CUDA 12 plugin.
        "gpu": ["tensorflow[and-cuda]>=2.18", "jax[cuda12]>=0.10", "orbax-checkpoint>=0.12"],
        # Cloud TPU VMs: the Keras JAX backend with libtpu. TensorFlow on a TPU VM comes from
        # the `tensorflow-tpu` wheel (a TPU VM TensorFlow image has it), not from this extra.
        "tpu": ["jax[tpu]>=0.10", "orbax-checkpoint>=0.12"],
        # The PyTorch peer of tools/benchmark.py (CPU torch; pip takes a local wheel where present).
        "bench": ["torch==2.13.0", "transformers>=4.40", "psutil>=5.9"],
    },
)
