"""Export models for the tools CPU users already run: llama.cpp (GGUF, GGUF LoRA) and Ollama (a Modelfile).

Our own writer over llama.cpp's `convert_hf_to_gguf.py`: no wheel ships that script (only llama-cpp-python's
76 MB sdist does), while the `gguf` package, a dependency already, ships the writer, the tensor-name tables
and the quantizers. So the export knows the architectures we bundle (`architectures.py`) and refuses others
with the way out: `--format hf` writes a merged HF folder that llama.cpp's converter takes.

Core: knows files and tensors, not the store or the server.
"""
