"""Cross-check edgekit's TFLite metadata against TFLite Support's own reader and writer.

TFLite Support pins protobuf below 4, which edgekit's ONNX stack cannot share, so this runs in two environments:

    python -m venv tfs-env && tfs-env/bin/pip install tflite-support==0.4.4
    python tools/check_tflite_metadata.py --support-python tfs-env/bin/python

It writes edgekit's metadata into tests/data/keras_fashion_int8.tflite and has TFLite Support's MetadataDisplayer
print it back; then it has TFLite Support's ImageClassifierWriter write its own metadata and edgekit read that.
Prints both and exits 1 if a field disagrees.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekit.runtime.tflite_metadata import TFLiteMetadata, read_metadata, with_metadata

MODEL = Path(__file__).resolve().parents[1] / "tests" / "data" / "keras_fashion_int8.tflite"

DISPLAY = """
import json, sys
from tflite_support import metadata
shown = metadata.MetadataDisplayer.with_model_file(sys.argv[1])
print(json.dumps({"metadata": json.loads(shown.get_metadata_json()),
                  "labels": shown.get_associated_file_buffer("labels.txt").decode().split()}))
"""
WRITE = """
import sys
from tflite_support.metadata_writers import image_classifier, writer_utils
writer = image_classifier.MetadataWriter.create_for_inference(
    writer_utils.load_file(sys.argv[1]), [127.5], [127.5], [sys.argv[2]])
writer_utils.save_file(writer.populate(), sys.argv[3])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--support-python", required=True, help="A Python with tflite-support installed.")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ours = Path(tmp) / "ours.tflite"
        meta = TFLiteMetadata("fashion", "cross-check", 32, 1, (127.5,), (127.5,), ["a", "b", "c"], "1")
        ours.write_bytes(with_metadata(MODEL.read_bytes(), meta))
        shown = json.loads(subprocess.run([args.support_python, "-c", DISPLAY, str(ours)], check=True,
                                          capture_output=True, text=True).stdout)
        print("TFLite Support reads edgekit's:", json.dumps(shown, indent=1))
        tensor = shown["metadata"]["subgraph_metadata"][0]["input_tensor_metadata"][0]
        norm = tensor["process_units"][0]["options"]
        size = tensor["content"]["content_properties"]["default_size"]
        ok &= (norm["mean"], norm["std"], size["width"], shown["labels"], shown["metadata"]["name"]) == (
            [127.5], [127.5], 32, ["a", "b", "c"], "fashion")
        labels, theirs = Path(tmp) / "labels.txt", Path(tmp) / "theirs.tflite"
        labels.write_text("x\ny\nz\n")
        subprocess.run([args.support_python, "-c", WRITE, str(MODEL), str(labels), str(theirs)], check=True)
        read = read_metadata(theirs)
        print("edgekit reads TFLite Support's:", read)
        ok &= read is not None and (read.mean, read.std, read.labels) == ((127.5,), (127.5,), ["x", "y", "z"])
    print("agree" if ok else "DISAGREE")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
