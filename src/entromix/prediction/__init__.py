"""Using a trained model: predict on new image files, export to ONNX / TorchScript, the CLI.
May import: every other ``entromix`` package (it comes after the pipeline's last stage)."""
