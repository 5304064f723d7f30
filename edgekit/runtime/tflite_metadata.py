"""TFLite Support metadata: the labels and input normalization written into a .tflite, where Android tooling
(the TFLite Task Library, Android Studio's ML Model Binding, MediaPipe's image classifier) reads them.

The layout is TFLite Support's `metadata_schema.fbs` (file identifier "M001"): a `ModelMetadata` flatbuffer in one
of the model's buffers, named "TFLITE_METADATA" in the model's metadata list, and the labels file packed into a
zip archive appended to the model, as TFLite Support's MetadataPopulator writes them. Only the tables edgekit
fills are built here (image input with NormalizationOptions, classification output with a TENSOR_AXIS_LABELS file);
`read_metadata` reads the same back. Normalization is in pixel units, as the schema defines it: (x - mean) / std
on values in [0, 255].
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
from flatbuffers.table import Table

METADATA_NAME = "TFLITE_METADATA"
IDENTIFIER = b"M001"
LABELS_FILE = "labels.txt"
MIN_PARSER_VERSION = "1.0.0"  # NormalizationOptions, ImageProperties and TENSOR_AXIS_LABELS are all 1.0 features

# Enum and union values of metadata_schema.fbs.
_GRAYSCALE, _RGB = 2, 1
_IMAGE_PROPERTIES = 2  # ContentProperties: FeatureProperties = 1, ImageProperties = 2
_FEATURE_PROPERTIES = 1
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType


@dataclass(frozen=True)
class TFLiteMetadata:
    """What edgekit writes: the model's name and description, its input image (size, channels, normalization in
    pixel units) and its class names (None: no labels)."""

    name: str
    description: str
    resolution: int
    channels: int
    mean: tuple[float, ...]  # per channel, pixel units: (x - mean) / std on x in [0, 255]
    std: tuple[float, ...]
    labels: list[str] | None = None
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "resolution": self.resolution,
                "channels": self.channels, "mean": list(self.mean), "std": list(self.std), "labels": self.labels,
                "version": self.version}


def _slot(index: int) -> int:
    """A field's vtable offset (flatbuffers numbers a table's fields in declaration order; a union takes two)."""
    return 4 + 2 * index


def _build(meta: TFLiteMetadata) -> bytes:
    b = flatbuffers.Builder(1024)

    def string(text: str) -> int:
        return b.CreateString(text)

    def floats(values: tuple[float, ...]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(float(v))
        return b.EndVector()

    def tables(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    # input: ImageProperties (color space, size) and NormalizationOptions
    b.StartObject(2)  # ImageSize
    b.PrependUint32Slot(0, meta.resolution, 0)
    b.PrependUint32Slot(1, meta.resolution, 0)
    size = b.EndObject()
    b.StartObject(2)  # ImageProperties
    b.PrependInt8Slot(0, _GRAYSCALE if meta.channels == 1 else _RGB, 0)
    b.PrependUOffsetTRelativeSlot(1, size, 0)
    image = b.EndObject()
    b.StartObject(3)  # Content
    b.PrependUint8Slot(0, _IMAGE_PROPERTIES, 0)
    b.PrependUOffsetTRelativeSlot(1, image, 0)
    input_content = b.EndObject()
    mean, std = floats(meta.mean), floats(meta.std)
    b.StartObject(2)  # NormalizationOptions
    b.PrependUOffsetTRelativeSlot(0, mean, 0)
    b.PrependUOffsetTRelativeSlot(1, std, 0)
    normalization = b.EndObject()
    b.StartObject(2)  # ProcessUnit
    b.PrependUint8Slot(0, _NORMALIZATION_OPTIONS, 0)
    b.PrependUOffsetTRelativeSlot(1, normalization, 0)
    unit = b.EndObject()
    units = tables([unit])
    input_name, input_description = string("image"), string("Input image to be classified.")
    b.StartObject(7)  # TensorMetadata
    b.PrependUOffsetTRelativeSlot(0, input_name, 0)
    b.PrependUOffsetTRelativeSlot(1, input_description, 0)
    b.PrependUOffsetTRelativeSlot(3, input_content, 0)
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    input_tensor = b.EndObject()

    # output: FeatureProperties and the labels file
    b.StartObject(0)  # FeatureProperties
    feature = b.EndObject()
    b.StartObject(3)  # Content
    b.PrependUint8Slot(0, _FEATURE_PROPERTIES, 0)
    b.PrependUOffsetTRelativeSlot(1, feature, 0)
    output_content = b.EndObject()
    files = None
    if meta.labels is not None:
        file_name, file_description = string(LABELS_FILE), string("Class names, line k naming output k.")
        b.StartObject(4)  # AssociatedFile
        b.PrependUOffsetTRelativeSlot(0, file_name, 0)
        b.PrependUOffsetTRelativeSlot(1, file_description, 0)
        b.PrependInt8Slot(2, _TENSOR_AXIS_LABELS, 0)
        files = tables([b.EndObject()])
    output_name, output_description = string("logits"), string("Scores of each class (logits).")
    b.StartObject(7)  # TensorMetadata
    b.PrependUOffsetTRelativeSlot(0, output_name, 0)
    b.PrependUOffsetTRelativeSlot(1, output_description, 0)
    b.PrependUOffsetTRelativeSlot(3, output_content, 0)
    if files is not None:
        b.PrependUOffsetTRelativeSlot(6, files, 0)
    output_tensor = b.EndObject()

    inputs, outputs = tables([input_tensor]), tables([output_tensor])
    b.StartObject(7)  # SubGraphMetadata
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs, 0)
    subgraph = b.EndObject()
    subgraphs = tables([subgraph])
    name, description, version = string(meta.name), string(meta.description), string(meta.version)
    parser = string(MIN_PARSER_VERSION)
    b.StartObject(8)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(1, description, 0)
    b.PrependUOffsetTRelativeSlot(2, version, 0)
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(7, parser, 0)
    b.Finish(b.EndObject(), file_identifier=IDENTIFIER)
    return bytes(b.Output())


def with_metadata(model: bytes, meta: TFLiteMetadata) -> bytes:
    """The .tflite `model` with `meta` in it (any earlier TFLITE_METADATA entry replaced, any appended archive
    dropped), its labels in an appended zip archive; a model whose weights lie outside its flatbuffer (over 2 GB)
    is returned as it is."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    if any((b.offset or 0) > 1 for b in tree.buffers or []):
        return model  # weights stored after the flatbuffer (models over 2 GB): repacking would drop them
    tree.metadata = [m for m in (tree.metadata or []) if _name(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = list(_build(meta))
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
    tree.metadata.append(entry)
    packed = bytes(flatbuffer_utils.convert_object_to_bytearray(tree))
    if meta.labels is None:
        return packed
    out = io.BytesIO(packed)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:  # appended after the flatbuffer, as TFLite Support packs files
        archive.writestr(LABELS_FILE, "".join(f"{label}\n" for label in meta.labels))
    return out.getvalue()


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def read_metadata(path: Path) -> TFLiteMetadata | None:
    """The TFLite Support metadata of a .tflite file (any tool's, as far as edgekit's fields go), or None."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            if isinstance(raw, int) or not len(raw):
                return None
            return _parse(bytes(raw), data)
    return None


def _parse(buf: bytes, model: bytes) -> TFLiteMetadata:
    def table(pos: int) -> Table:
        return Table(buf, pos)

    def field(t: Table, index: int) -> int:
        return t.Offset(_slot(index))

    def string(t: Table, index: int) -> str:
        o = field(t, index)
        return t.String(o + t.Pos).decode() if o else ""

    def child(t: Table, index: int) -> Table | None:
        o = field(t, index)
        return table(t.Indirect(o + t.Pos)) if o else None

    def children(t: Table, index: int) -> list[Table]:
        o = field(t, index)
        if not o:
            return []
        start = t.Vector(o)
        return [table(t.Indirect(start + 4 * k)) for k in range(t.VectorLen(o))]

    def floats(t: Table, index: int) -> tuple[float, ...]:
        o = field(t, index)
        if not o:
            return ()
        start = t.Vector(o)
        return tuple(t.Get(flatbuffers.number_types.Float32Flags, start + 4 * k) for k in range(t.VectorLen(o)))

    root = table(flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    subgraphs = children(root, 3)
    resolution = channels = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    labels = None
    if subgraphs:
        inputs = children(subgraphs[0], 2)
        if inputs:
            content = child(inputs[0], 3)
            if content is not None and content.Get(flatbuffers.number_types.Uint8Flags,
                                                   field(content, 0) + content.Pos) == _IMAGE_PROPERTIES:
                image = child(content, 1)
                if image is not None:
                    o = field(image, 0)
                    space = image.Get(flatbuffers.number_types.Int8Flags, o + image.Pos) if o else 0
                    channels = 1 if space == _GRAYSCALE else 3
                    size = child(image, 1)
                    if size is not None and field(size, 0):
                        resolution = size.Get(flatbuffers.number_types.Uint32Flags, field(size, 0) + size.Pos)
            for unit in children(inputs[0], 4):
                o = field(unit, 0)
                if o and unit.Get(flatbuffers.number_types.Uint8Flags, o + unit.Pos) == _NORMALIZATION_OPTIONS:
                    options = child(unit, 1)
                    if options is not None:
                        mean, std = floats(options, 0), floats(options, 1)
        outputs = children(subgraphs[0], 3)
        for file in children(outputs[0], 6) if outputs else []:
            o = field(file, 2)
            kind = file.Get(flatbuffers.number_types.Int8Flags, o + file.Pos) if o else 0
            if kind == _TENSOR_AXIS_LABELS:
                labels = _packed_labels(model, string(file, 0))
                break
    return TFLiteMetadata(name=string(root, 0), description=string(root, 1), resolution=resolution,
                          channels=channels, mean=mean, std=std, labels=labels, version=string(root, 2))


def _packed_labels(model: bytes, name: str) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            text = archive.read(name).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        return None
    return [line.strip() for line in text.splitlines() if line.strip()]
