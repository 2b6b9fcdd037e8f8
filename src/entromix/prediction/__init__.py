"""Using a trained model: predict on new image files, export to ONNX / TorchScript (the
``entromix predict`` / ``export`` commands are in ``entromix.cli``).
May import: every other ``entromix`` package but ``cli`` (it comes after the pipeline's last stage)."""
