"""Data augmentation shared by the cloud and the device: `augment.image` (numpy only),
`augment.text` (EDA over WordNet from `augment.wordnet`, or over a synonym table) and
`augment.synonyms` (that table, built on the cloud and shipped in the bundle).

Submodules are imported on demand so the device side never loads nltk when it has a table.
"""
