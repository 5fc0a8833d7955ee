"""ONNX files without the `onnx` package: `proto` (onnx's schema as protobuf classes, tensors
as numpy arrays), `vet` (what the runtime checks before onnxruntime sees a file) and `graph`
(the nodes-and-initializers view the firmware reader walks)."""
