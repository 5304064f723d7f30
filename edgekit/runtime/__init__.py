"""Running a model file: one runner family for torch, ONNX Runtime and TFLite, and the on-device harness
it shares."""
