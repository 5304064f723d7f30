"""INT8 quantization: one PT2E calibration, exported to full-integer ONNX and TFLite graphs."""

from edgekit.core.quiet import quiet

with quiet():  # torchao announces CUDA kernels it cannot load on a CPU machine; none are needed here
    import torchao.quantization.pt2e  # noqa: F401
