"""edgekit: efficient CNNs from a recipe to a verified INT8 model, measured on the device."""

__version__ = "0.1.0"
