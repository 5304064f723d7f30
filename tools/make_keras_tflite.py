"""Make tests/data/keras_fashion_int8.tflite: a small Keras CNN trained on Fashion-MNIST and converted by
TensorFlow's own converter to full-integer INT8 (int8 input and output, NHWC), the kind of file users bring from
Keras. edgekit never needs TensorFlow; this script does, so it runs in a throwaway environment:

    python -m venv tf-env && tf-env/bin/pip install tensorflow-cpu numpy
    tf-env/bin/python tools/make_keras_tflite.py            # writes tests/data/keras_fashion_int8.tflite

The model takes 32x32 grayscale images as (1, 32, 32, 1), pixels scaled to [-1, 1] (mean 0.5, std 0.5 on [0, 1]);
its ten outputs are Fashion-MNIST's classes in the dataset's order. Training images are the 28 px originals
resized bilinearly to 32 px, as tests/fixtures/image_folders.py writes its folders. Seeded, 4 epochs.
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKIT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def read_idx(path: Path) -> np.ndarray:
    if path.suffix == ".gz":
        with gzip.open(path) as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def split(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    def find(kind: str) -> Path:
        return next(p for p in (DATA / f"{prefix}-{kind}.gz", DATA / f"{prefix}-{kind}") if p.is_file())
    images = read_idx(find("images-idx3-ubyte"))[..., None].astype(np.float32) / 255.0
    images = tf.image.resize(images, (32, 32), method="bilinear").numpy()
    return (images - 0.5) / 0.5, read_idx(find("labels-idx1-ubyte")).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "keras_fashion_int8.tflite")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    tf.keras.utils.set_random_seed(0)
    x, y = split("train")
    x_val, y_val = split("t10k")
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        layers.Input((32, 32, 1)),
        layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False), layers.BatchNormalization(momentum=0.9),
        layers.ReLU(6.0),
        layers.DepthwiseConv2D(3, padding="same", use_bias=False), layers.BatchNormalization(momentum=0.9),
        layers.ReLU(6.0),
        layers.Conv2D(32, 1, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU(6.0),
        layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False), layers.BatchNormalization(momentum=0.9),
        layers.ReLU(6.0),
        layers.Conv2D(64, 1, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU(6.0),
        layers.GlobalAveragePooling2D(), layers.Dense(10),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=args.epochs, validation_data=(x_val, y_val), verbose=2)

    def representative():
        for i in range(0, 512, 1):
            yield [x[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(converter.convert())
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes); Keras FP32 val top-1 "
          f"{model.evaluate(x_val, y_val, verbose=0)[1]:.4f}")


if __name__ == "__main__":
    main()
