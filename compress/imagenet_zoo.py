"""ImageNet CNNs as graphs (docs/OPS.md), from weights in torchvision's key layout.

    tensors = read_torch_checkpoint("mobilenet_v2-b0353104.pth")
    g = build("mobilenet_v2", tensors)     # engine.ir.Graph, float32 tensors

Architectures follow torchvision (models/mobilenetv2.py, resnet.py, squeezenet.py) and its
state-dict names: `features.1.conv.0.0.weight`, `layer1.0.downsample.1.running_var`,
`features.3.expand1x1.weight`. Each BatchNorm is folded into the conv before it (inference
statistics, torchvision's eps 1e-5): w' = w * s, b' = (b - mean) * s + beta with
s = gamma / sqrt(var + eps) per output channel, computed in float64. Dropout is the identity
at inference and is left out. The class count is read from the last layer's weight.
`lenet300` and `lenet5` (compress/zoo.py) take their own names (`conv1.weight`, ...).

Every expected tensor is checked by name and shape, and all that is missing, unexpected
(`num_batches_tracked` is neither: old checkpoints lack it) or mis-shaped is reported in one
WeightsError.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from compress import zoo
from engine.ir import Graph, Node, Preprocess

ARCHS = ("mobilenet_v2", "resnet18", "squeezenet1_1", "lenet300", "lenet5")
BN_EPS = 1e-5                                 # torchvision's BatchNorm2d default
IMAGENET_MEAN = [0.485, 0.456, 0.406]         # torchvision's ImageNet transforms
IMAGENET_STD = [0.229, 0.224, 0.225]
INPUT_SHAPE = (3, 224, 224)
_LISTED = 12  # names listed per kind of problem in a message

# MobileNetV2 (Sandler et al. 2018, table 2): expansion t, output channels c, blocks n, stride s
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))
# ResNet-18: BasicBlocks per stage and channels; stages after the first halve the resolution
_RESNET18 = ((2, 64), (2, 128), (2, 256), (2, 512))
# SqueezeNet 1.1 `features` from index 2: "M" max pooling, (squeeze, expand) a fire module
_SQUEEZENET_1_1 = ("M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192),
                   (48, 192), (64, 256), (64, 256))


class WeightsError(ValueError):
    """Weights that do not fit the architecture; `missing`, `unexpected` and `mismatched`
    hold every problem, the message the first few of each."""

    def __init__(self, arch: str, missing: list, unexpected: list, mismatched: list,
                 nonfinite: list | None = None, source: str | None = None):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        self.nonfinite = nonfinite or []
        parts = [f"{what} ({len(names)}): {_listed(names)}" for what, names in (
            ("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched),
            ("not finite float32 values (BatchNorm folded)", self.nonfinite)) if names]
        where = f"{source}: " if source else ""
        super().__init__(f"{where}the weights do not fit {arch}: " + "; ".join(parts))


def _listed(names: list) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


class _Net:
    """Builds the graph while taking tensors by name, collecting every problem."""

    def __init__(self, arch: str, tensors: dict, source: str | None = None):
        self.arch, self.src, self.source = arch, tensors, source
        self.used: set[str] = set()
        self.expected: dict[str, tuple] = {}
        self.missing: list[str] = []
        self.mismatched: list[str] = []
        self.nodes: list[Node] = []
        self.tensors: dict[str, np.ndarray] = {}

    def take(self, key: str, shape: tuple) -> np.ndarray:
        self.used.add(key)
        self.expected[key] = tuple(shape)
        if key not in self.src:
            self.missing.append(key)
            return np.zeros(shape)
        a = np.asarray(self.src[key])
        if a.shape != tuple(shape):
            self.mismatched.append(f"{key} {tuple(a.shape)} (expected {tuple(shape)})")
            return np.zeros(shape)
        return a.astype(np.float64)

    def out_features(self, key: str, default: int = 1000) -> int:
        """Classes: the first dimension of the last layer's weight, when it has one."""
        shape = np.shape(self.src.get(key, ()))
        return int(shape[0]) if len(shape) in (2, 4) and shape[0] > 0 else default

    def node(self, op: str, name: str, inputs: list[str], attrs: dict | None = None,
             params: dict[str, np.ndarray] | None = None) -> str:
        roles = {}
        for role, value in (params or {}).items():
            with np.errstate(over="ignore"):  # past float32: reported as not finite
                self.tensors[f"{name}.{role}"] = value.astype(np.float32)
            roles[role] = f"{name}.{role}"
        self.nodes.append(Node(op, name, list(inputs), [name], dict(attrs or {}), roles))
        return name

    def conv(self, x: str, key: str, bn: str | None, cin: int, cout: int, k: int,
             stride: int = 1, padding: int = 0, groups: int = 1, act: str | None = None) -> str:
        """Conv `key` (bias-free when BatchNorm `bn` follows it, folded in), then `act`."""
        w = self.take(f"{key}.weight", (cout, cin // groups, k, k))
        if bn is None:
            b = self.take(f"{key}.bias", (cout,))
        else:
            gamma, beta, mean, var = (self.take(f"{bn}.{p}", (cout,)) for p in
                                      ("weight", "bias", "running_mean", "running_var"))
            self.used.add(f"{bn}.num_batches_tracked")  # a counter, not needed at inference
            with np.errstate(all="ignore"):  # a negative variance is reported as not finite
                s = gamma / np.sqrt(var + BN_EPS)
            w, b = w * s[:, None, None, None], beta - mean * s
        attrs = {"stride": [stride, stride], "padding": [padding, padding]}
        if groups != 1:
            attrs["groups"] = groups
        y = self.node("conv2d", key, [x], attrs, {"weight": w, "bias": b})
        if act == "relu":
            return self.node("relu", f"{key}.relu", [y])
        if act == "relu6":
            return self.node("clip", f"{key}.relu6", [y], {"min": 0.0, "max": 6.0})
        return y

    def head(self, x: str, key: str | None, cin: int) -> str:
        """Global average pooling, flatten, and the `key` linear classifier (if any)."""
        x = self.node("global_avgpool", "avgpool", [x])
        x = self.node("flatten", "flatten", [x], {"start_dim": 1})
        if key is None:
            return x
        classes = self.out_features(f"{key}.weight")
        return self.node("linear", key, [x], params={
            "weight": self.take(f"{key}.weight", (classes, cin)),
            "bias": self.take(f"{key}.bias", (classes,))})

    def graph(self, output: str, labels) -> Graph:
        optional = {k for k in self.src if k.endswith(".num_batches_tracked")}
        unexpected = sorted(set(self.src) - self.used - optional)
        nonfinite = [k for k, v in self.tensors.items() if not np.isfinite(v).all()]
        if self.missing or unexpected or self.mismatched or nonfinite:
            raise WeightsError(self.arch, self.missing, unexpected, self.mismatched, nonfinite,
                               self.source)
        pre = Preprocess(scale=1.0 / 255.0, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
        fields = {f.name for f in dataclasses.fields(Preprocess)}
        for name, value in (("resize", 256), ("crop", 224)):  # torchvision's eval transform
            if name in fields:
                setattr(pre, name, value)
        return Graph(nodes=self.nodes, input_name="input", input_shape=INPUT_SHAPE,
                     output_name=output, tensors=self.tensors, labels=list(labels or []),
                     preprocess=pre, producer=f"pocketnn import ({self.arch}, torchvision "
                                              f"layout)")


def _mobilenet_v2(net: _Net) -> str:
    x = net.conv("input", "features.0.0", "features.0.1", 3, 32, 3, 2, 1, act="relu6")
    cin, i = 32, 1
    for t, c, n, s in _MOBILENET_V2:
        for j in range(n):
            stride, hidden, p = (s if j == 0 else 1), cin * t, f"features.{i}.conv"
            y, k = x, 0
            if t != 1:  # pointwise expansion
                y, k = net.conv(y, f"{p}.0.0", f"{p}.0.1", cin, hidden, 1, act="relu6"), 1
            y = net.conv(y, f"{p}.{k}.0", f"{p}.{k}.1", hidden, hidden, 3, stride, 1,
                         groups=hidden, act="relu6")                    # depthwise
            y = net.conv(y, f"{p}.{k + 1}", f"{p}.{k + 2}", hidden, c, 1)  # linear bottleneck
            if stride == 1 and cin == c:
                y = net.node("add", f"features.{i}.add", [x, y])
            x, cin, i = y, c, i + 1
    x = net.conv(x, "features.18.0", "features.18.1", cin, 1280, 1, act="relu6")
    return net.head(x, "classifier.1", 1280)


def _resnet18(net: _Net) -> str:
    x = net.conv("input", "conv1", "bn1", 3, 64, 7, 2, 3, act="relu")
    x = net.node("maxpool2d", "maxpool", [x], {"kernel": [3, 3], "stride": [2, 2],
                                               "padding": [1, 1]})
    cin = 64
    for stage, (blocks, planes) in enumerate(_RESNET18, 1):
        for b in range(blocks):
            p, stride = f"layer{stage}.{b}", (2 if stage > 1 and b == 0 else 1)
            y = net.conv(x, f"{p}.conv1", f"{p}.bn1", cin, planes, 3, stride, 1, act="relu")
            y = net.conv(y, f"{p}.conv2", f"{p}.bn2", planes, planes, 3, 1, 1)
            if stride != 1 or cin != planes:
                x = net.conv(x, f"{p}.downsample.0", f"{p}.downsample.1", cin, planes, 1,
                             stride)
            x = net.node("relu", f"{p}.relu", [net.node("add", f"{p}.add", [x, y])])
            cin = planes
    return net.head(x, "fc", cin)


def _squeezenet1_1(net: _Net) -> str:
    x = net.conv("input", "features.0", None, 3, 64, 3, 2, act="relu")
    cin = 64
    for i, layer in enumerate(_SQUEEZENET_1_1, 2):
        if layer == "M":
            x = net.node("maxpool2d", f"features.{i}", [x], {"kernel": [3, 3], "stride": [2, 2],
                                                             "ceil_mode": 1})
            continue
        squeeze, expand = layer
        p = f"features.{i}"
        s = net.conv(x, f"{p}.squeeze", None, cin, squeeze, 1, act="relu")
        a = net.conv(s, f"{p}.expand1x1", None, squeeze, expand, 1, act="relu")
        b = net.conv(s, f"{p}.expand3x3", None, squeeze, expand, 3, 1, 1, act="relu")
        x, cin = net.node("concat", f"{p}.concat", [a, b], {"axis": 1}), 2 * expand
    classes = net.out_features("classifier.1.weight")
    x = net.conv(x, "classifier.1", None, cin, classes, 1, act="relu")
    return net.head(x, None, classes)


_BUILDERS = {"mobilenet_v2": _mobilenet_v2, "resnet18": _resnet18,
             "squeezenet1_1": _squeezenet1_1}


def build(arch: str, tensors: dict, *, labels: list[str] | None = None,
          source: str | None = None) -> Graph:
    """The graph of `arch` with `tensors` (name -> array) as its weights; WeightsError when
    they do not fit (every problem listed; `source` names the file in the message),
    ValueError for an unknown arch."""
    if arch in zoo.NAMES:
        return _lenet(arch, tensors, labels, source)
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    net = _Net(arch, tensors, source)
    output = _BUILDERS[arch](net)
    return net.graph(output, labels)


def _lenet(arch: str, tensors: dict, labels, source) -> Graph:
    graph = zoo.build(arch)  # the structure; every tensor is replaced
    net = _Net(arch, tensors, source)
    with np.errstate(over="ignore"):  # past float32: reported as not finite
        graph.tensors = {k: net.take(k, np.shape(v)).astype(np.float32)
                         for k, v in graph.tensors.items()}
    unexpected = sorted(set(tensors) - net.used)
    nonfinite = [k for k, v in graph.tensors.items() if not np.isfinite(v).all()]
    if net.missing or unexpected or net.mismatched or nonfinite:
        raise WeightsError(arch, net.missing, unexpected, net.mismatched, nonfinite, source)
    if labels:
        graph.labels = list(labels)
    return graph


def expected_shapes(arch: str) -> dict[str, tuple]:
    """name -> shape of every tensor `build(arch, ...)` needs (1000 classes)."""
    if arch in zoo.NAMES:
        return {k: np.shape(v) for k, v in zoo.build(arch).tensors.items()}
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    net = _Net(arch, {})
    _BUILDERS[arch](net)
    return net.expected


def guess_arch(tensors: dict) -> str | None:
    """The architecture whose tensor names overlap `tensors`' most (Jaccard index at least
    0.5; num_batches_tracked ignored), if any."""
    names = {k for k in tensors if not str(k).endswith(".num_batches_tracked")}
    scores = {}
    for arch in ARCHS:
        expected = set(expected_shapes(arch))
        scores[arch] = len(names & expected) / max(len(names | expected), 1)
    best = max(scores, key=scores.get)
    return best if scores[best] >= 0.5 else None
