"""Running a model file: the format table (formats), one runner family for torch, ONNX Runtime and TFLite
(runners, wrapping the on-device harness's model classes), opening a file with its preprocessing (open), and
numerical parity (parity)."""
