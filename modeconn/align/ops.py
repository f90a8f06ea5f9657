"""The ops the permutation tracer knows by name: those acting on each channel alone (the
channel group passes through), the nonlinearities (activation matching's default tap points),
the merges of two tensors, and the reshapes."""

from torch import nn

# modules and functions that act on each channel alone (the channel group passes through)
PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.CELU,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.PReLU, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
PASS_NAMES = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "leaky_relu",
    "hardswish", "hardsigmoid", "hardtanh", "softplus", "mish", "dropout", "dropout2d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "contiguous", "clone", "float", "double",
    "to", "detach", "neg", "abs", "exp", "sqrt", "square", "pow", "clamp", "clamp_min",
}  # fmt: skip
# the nonlinearities whose outputs are activation matching's default tap points
ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.CELU,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.PReLU,
)  # fmt: skip
ACTIVATION_NAMES = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "leaky_relu",
    "hardswish", "hardsigmoid", "hardtanh", "softplus", "mish",
}  # fmt: skip
MERGE_NAMES = {"add", "add_", "iadd", "sub", "isub", "mul", "mul_", "imul", "truediv", "div"}
SHAPE_NAMES = {"size", "dim", "shape", "getattr", "numel"}  # results are not tensors
FLATTEN_NAMES = {"flatten", "view", "reshape"}
