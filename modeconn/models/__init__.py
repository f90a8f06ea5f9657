"""Models by name: `build_model("preresnet20", num_classes=10, input_shape=(3, 32, 32))`.

Importing this package registers every model below in `MODELS`.
"""

from modeconn.models import allconv, convfc, mlp, preresnet, vgg, wideresnet  # noqa: F401  (register)
from modeconn.models.registry import MODELS, build_model, model_names, register_model

__all__ = ["MODELS", "build_model", "model_names", "register_model"]
