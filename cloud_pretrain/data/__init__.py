"""The offline data layer: public and per-user data, read from installed packages only.

One module per source (`text`, `shakespeare`, `images`, `leaf`), the rendering of handwriting
in `fonts`, the per-user containers and the paper's user selection in `users`, a task's users
in `sources`, the model-input form a device receives in `export`, installed paths and the
errors naming what is missing in `paths`, figures in `plots`. Nothing here downloads anything.
"""
