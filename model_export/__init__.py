"""The PyTorch side: architectures, data, training, evaluation and ONNX export of InvSR Desktop's models.

May import torch; the application never imports this package.
"""
