"""Stage 6, ship: model files, exports (ONNX, C, .tflite), run directories and the report."""
