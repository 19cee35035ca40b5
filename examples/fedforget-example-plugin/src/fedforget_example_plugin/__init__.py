"""An example fedforget plugin: the ``reset_head`` unlearning method, the
``wide_mlp`` model and the ``blobs`` dataset, registered through entry points
(see ``pyproject.toml``). Nothing here imports on package import: fedforget
imports each module when it loads the entry point that names it."""

__version__ = "0.1.0"
