"""UDA methods as plug-ins over one training loop: `Method` (base.py) is the interface,
`dann/plugins.py` the registry. `build(config, num_classes)` makes the one named by --method."""
from __future__ import annotations

from dann import plugins
from dann.methods.base import Method


def build(config, num_classes: int) -> Method:
    return plugins.load(plugins.METHODS, config.method)(config, num_classes)
