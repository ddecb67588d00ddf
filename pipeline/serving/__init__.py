"""Using a trained model: predict (files in, classes out), serve (HTTP service and page), export (ONNX copies of
Keras models), and imaging (any picture -> a Fashion-MNIST-like 28x28 input)."""
