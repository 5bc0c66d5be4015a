"""`facecls export`: a checkpoint as a self-describing ONNX or TorchScript file (uint8 images in,
normalisation inside, metadata embedded), checked against the PyTorch model before it is kept."""
