"""What makes a model servable as an image classifier, checked before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from export.errors import BadOption, UnsupportedModel
from export.source import Shape, SourceModel


@dataclass(frozen=True)
class ImageInterface:
    """The served interface: (batch, height, width, 3) float32 in, (batch, classes) out."""

    # The model's own (height, width); None where the model accepts any size.
    model_size: tuple[int | None, int | None]
    # The size images are resized to for this model (the model's, or the one asked for).
    target_size: tuple[int, int]
    classes: int

    @property
    def input_shape(self) -> Shape:
        return (None, *self.model_size, 3)


def image_interface(
    model: SourceModel, labels: Sequence[str], target_size: tuple[int, int] | None = None
) -> ImageInterface:
    """Check that `model` takes an image batch and returns one score per label.

    `target_size` is required when the model accepts images of any size, and must agree with the
    model's size when it has one.
    """
    shape, dtype = model.input_shape, model.input_dtype
    if len(shape) != 4 or shape[3] != 3:
        raise UnsupportedModel(
            f"the model's input has shape {_show(shape)}; an image classifier takes "
            f"(batch, height, width, 3) images"
        )
    if dtype != "float32":
        raise UnsupportedModel(f"the model's input is {dtype}; an image classifier here takes float32")
    out = model.output_shape
    if len(out) != 2 or out[1] is None:
        raise UnsupportedModel(
            f"the model's output has shape {_show(out)}; an image classifier returns (batch, classes)"
        )
    classes = out[1]
    if classes != len(labels):
        raise BadOption(
            f"the model returns {classes} scores but there are {len(labels)} labels; "
            f"give the model's labels (--labels FILE)"
        )
    height, width = shape[1], shape[2]
    if target_size is not None:
        for axis, fixed, wanted in (("height", height, target_size[0]), ("width", width, target_size[1])):
            if fixed is not None and fixed != wanted:
                raise BadOption(f"the model's input {axis} is {fixed}, not {wanted} as asked")
        size = target_size
    elif height is None or width is None:
        raise BadOption(
            "the model accepts images of any size; give the size it was trained on (--target-size)"
        )
    else:
        size = (height, width)
    return ImageInterface(model_size=(height, width), target_size=size, classes=classes)


def _show(shape: Shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
