"""Model files: offline model packs (:mod:`.packs`: download, verify, GGUF conversion in
:mod:`._convert`) and a local llama.cpp server over a pack's GGUF
(:mod:`.llamacpp_server`)."""
