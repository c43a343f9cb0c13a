"""The pieces of the training loop (BasicSR's ``models`` and ``utils``), used by :mod:`model_export.train`.

- :mod:`~model_export.training.config`: TOML configs, defaults, ``--set`` overrides, unknown-key errors.
- :mod:`~model_export.training.models`: the registry of model families (``esrgan``; ``inn`` and ``diffusion`` come
  later) that hold the nets, losses, optimizers and the optimisation step.
- :mod:`~model_export.training.losses`: the registry of loss terms.
- :mod:`~model_export.training.optim`: optimizers and the learning-rate schedule (warm-up, cosine, multistep).
- :mod:`~model_export.training.ema`: exponential moving average of the weights.
- :mod:`~model_export.training.checkpoint`: atomic, ``weights_only``-loadable checkpoints; RNG state capture.
- :mod:`~model_export.training.logger`: ``log.jsonl`` / ``log.csv`` / ``curves.png``.
- :mod:`~model_export.training.validation`: validation PSNR (Y channel, border shaved) on held-out images.
- :mod:`~model_export.training.distributed`: torchrun / DDP helpers.
"""
