"""The search engine shared by all bots: decode, embed, index, rank. No chat libraries here."""

# ONNX Runtime's native module crashes the process (SIGSEGV) when it loads after
# usearch's (onnxruntime 1.32, usearch 2.26.6: `import usearch; import onnxruntime`), so
# it loads first, with the package, whichever engine module a program imports first.
import onnxruntime  # noqa: F401
