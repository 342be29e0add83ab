"""The offline data layer: public and per-user data, read from installed packages only.

One module per source (`text`, `shakespeare`, `images`, `leaf`), the rendering of handwriting
in `fonts`, the per-user containers and the paper's user selection in `users`, and the
model-input form a device receives in `export`. Nothing here downloads anything.
"""
