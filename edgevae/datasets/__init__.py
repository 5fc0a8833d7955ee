"""Dataset readers, validation, splits and binarization (see `edgevae.data` for the overview)."""
