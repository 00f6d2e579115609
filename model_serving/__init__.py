"""Everything that loads or serves a model: the registry and one adapter per model family.

Heavy imports (ctranslate2, onnxruntime) happen inside the adapters' load, never at import."""
