"""tinybert_tf: TinyBERT-style distillation of keras-hub BERT-family teachers (Keras 3 / TensorFlow)."""

from setuptools import find_packages, setup

setup(
    name="tinybert_tf",
    version="0.1.0",
    description="Distil keras-hub BERT-family teachers into small TinyBERT-style students.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tinybert_tf", "tinybert_tf.*"]),
    python_requires=">=3.10",
    # `tinybert-tf --config=configs/<file>.py --workdir=DIR` = `python -m tinybert_tf.main ...`
    entry_points={"console_scripts": ["tinybert-tf=tinybert_tf.main:entry"]},
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
        "test": ["pytest>=8", "ruff==0.17.6", "matplotlib>=3.8", "jax>=0.10", "orbax-checkpoint>=0.12", "scikit-learn>=1.9", "scipy>=1.17", "seqeval>=1.2.2"],
        "demo": ["matplotlib>=3.8"],
        "jax": ["jax>=0.10", "orbax-checkpoint>=0.12"],
        # The PyTorch peer of tools/benchmark.py (CPU torch; pip takes a local wheel where present).
        "bench": ["torch==2.13.0", "transformers>=4.40", "psutil>=5.9"],
    },
)
