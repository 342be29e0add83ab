"""Data augmentation shared by the cloud and the device: `augment.image` (numpy only) and
`augment.text` (EDA with nlpaug and an offline WordNet from `augment.wordnet`).

Submodules are imported on demand so the device side loads nltk only when it augments text.
"""
