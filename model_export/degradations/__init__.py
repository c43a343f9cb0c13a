"""Degradations that turn an HR image into its LR input: MATLAB bicubic and the "real photo" pipeline."""

from model_export.degradations.matlab_resize import imresize

__all__ = ["imresize"]
